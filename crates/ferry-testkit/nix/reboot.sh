# reboot: SIMULATES a reboot of the test host; the real machine is never touched. Returns at
# once; 1 s later, detached: every process of the host (services, sshd, SSH sessions) is
# stopped, except the test kit's namespace anchor; /run is emptied (but for the kit's
# /run/ferry-testhost and sshd's /run/sshd) as a tmpfs would be; a fresh boot id is written
# (/proc/sys/kernel/random/boot_id is a per-host file on test hosts); then the boot default
# /boot/default-system is booted: its `init` activates it and starts its services, sshd included.
if [ "$1" != --now ]; then
  echo "simulating a reboot of this test host in 1 s (the real machine is not touched)"
  setsid "$0" --now </dev/null >/dev/null 2>&1 &
  exit 0
fi
sleep 1
for link in "$state"/services/*; do
  [ -L "$link" ] && stop_service "${link##*/}"
done
if alive "$(sshd_pid)"; then kill "$(sshd_pid)"; fi
anchor=$(cat /run/ferry-testhost/anchor.pid 2>/dev/null)
if [ -n "$anchor" ]; then
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] || [ "$p" = "$anchor" ] || ! alive "$p" || kill -9 "$p" 2>/dev/null
  done
fi
for f in /run/* /run/.[!.]*; do
  case "$f" in
    /run/ferry-testhost | /run/sshd | "/run/.[!.]*") ;;
    *) rm -rf "$f" ;;
  esac
done
# On a real machine this file is read-only (even for root): the write fails harmlessly.
cat /proc/sys/kernel/random/uuid > /proc/sys/kernel/random/boot_id 2>/dev/null
if [ -x /boot/default-system/init ]; then
  /boot/default-system/init >>/run/ferry-testhost/boot.log 2>&1
else
  start_sshd
fi
