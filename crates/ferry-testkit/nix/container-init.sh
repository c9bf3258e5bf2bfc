# init of a test container (PID 1 under systemd-nspawn, like a NixOS container's stage 2):
# activate this system and start its services (switch-to-configuration test), then wait. A
# reload (`switch-to-configuration test` run inside the running container) leaves this process
# alone, so its PID only changes when the container restarts. SIGRTMIN+3 (what systemd-nspawn
# sends to stop a container whose init is systemd) or SIGTERM stops the services and exits.
mkdir -p /run /tmp "$state"
shutdown() {
  for link in "$state"/services/*; do
    [ -L "$link" ] && stop_service "${link##*/}"
  done
  exit 0
}
trap shutdown TERM INT 37
echo "ferry test container init: starting $out"
"$out/bin/switch-to-configuration" test || echo "warning: activation failed" >&2
while :; do
  sleep 3600 &
  wait $!
done
