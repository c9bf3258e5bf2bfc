# activate: what NixOS's `activate` does, for a test host. Installs this system's /etc (the
# /etc/static link, swapped atomically, and one /etc/FILE -> /etc/static/FILE link per file;
# links of files the previous system had and this one lacks are removed), points
# /run/current-system here, writes the health marker and keeps sshd running (or, with
# killSshd, kills its listener: established sessions survive, new connections fail).
echo "activating the configuration..."
mkdir -p "$state" /etc

swap_link "$out/etc" /etc/static
files=$(cd "$out/etc" && find . ! -type d | sed 's|^\./||' | sort)
for f in $files; do
  mkdir -p "/etc/$(dirname "$f")"
  [ "$(readlink "/etc/$f")" = "/etc/static/$f" ] || ln -sfn "/etc/static/$f" "/etc/$f"
done
if [ -f /etc/.ferry-test-clean ]; then
  for f in $(cat /etc/.ferry-test-clean); do
    if ! printf '%s\n' "$files" | grep -qxF -- "$f" && [ "$(readlink "/etc/$f")" = "/etc/static/$f" ]; then
      rm -f "/etc/$f"
    fi
  done
fi
printf '%s\n' "$files" > /etc/.ferry-test-clean

swap_link "$out" /run/current-system

if [ -n "$unhealthy" ]; then rm -f "$state/healthy"; else touch "$state/healthy"; fi

if [ -n "$killSshd" ]; then
  if alive "$(sshd_pid)"; then
    echo "stopping sshd (this test system kills it)"
    kill "$(sshd_pid)"
  fi
elif ! alive "$(sshd_pid)"; then
  echo "starting sshd"
  start_sshd || echo "warning: sshd did not start" >&2
fi
