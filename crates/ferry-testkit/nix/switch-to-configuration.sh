# switch-to-configuration GOAL, as on NixOS:
#   switch        make this system the boot default, activate it, (re)start what changed
#   boot          only make it the boot default (/boot/default-system -> this system)
#   test          activate it and (re)start what changed; the boot default is unchanged
#   dry-activate  print what switch/test would do ("would restart service httpd"); change nothing
# A service is restarted when its store path differs from the running one (or it is not
# running), stopped when the new system lacks it, left alone (same PID) otherwise.
# Exit 1 if a service fails, or if this system was built with failActivation (after it was
# activated, like a unit failing at the end of a real switch), or if its activationHook fails
# (before anything is activated).
goal=$1
case "$goal" in
  switch | boot | test | dry-activate) ;;
  *) echo "usage: $0 [switch|boot|test|dry-activate]" >&2; exit 1 ;;
esac

if { [ "$goal" = switch ] || [ "$goal" = test ]; } && [ -x "$out/activation-hook" ]; then
  "$out/activation-hook" || { echo "error: the activation hook of this test system failed" >&2; exit 1; }
fi

if [ "$goal" = switch ] || [ "$goal" = boot ]; then
  echo "updating the boot default..."
  mkdir -p /boot
  swap_link "$out" /boot/default-system
fi
[ "$goal" != boot ] || exit 0

stop="" restart="" start=""
for link in "$state"/services/*; do
  [ -L "$link" ] || continue
  n=${link##*/}
  [ -e "$out/services/$n" ] || stop="$stop $n"
done
for link in "$out"/services/*; do
  n=${link##*/}
  if [ ! -L "$state/services/$n" ]; then
    start="$start $n"
  elif [ "$(readlink "$state/services/$n")" != "$(readlink "$link")" ] || ! alive "$(cat "$state/$n.pid" 2>/dev/null)"; then
    restart="$restart $n"
  fi
done

if [ "$goal" = dry-activate ]; then
  for n in $stop; do echo "would stop service $n"; done
  for n in $restart; do echo "would restart service $n"; done
  for n in $start; do echo "would start service $n"; done
  echo "would activate the configuration $out"
  if [ -n "$killSshd" ]; then echo "would stop sshd"; fi
  exit 0
fi

for n in $stop; do echo "stopping service $n"; stop_service "$n"; done
for n in $restart; do stop_service "$n"; done
"$out/activate"
failed=""
for n in $restart; do
  echo "restarting service $n"
  start_service "$n" "$(readlink "$out/services/$n")" || failed="$failed $n"
done
for n in $start; do
  echo "starting service $n"
  start_service "$n" "$(readlink "$out/services/$n")" || failed="$failed $n"
done

if [ -n "$failed" ]; then
  echo "error: the following services failed:$failed" >&2
  exit 1
fi
if [ -n "$failActivation" ]; then
  echo "error: unit ferry-test-failure.service failed (this test system fails its activation)" >&2
  exit 1
fi
