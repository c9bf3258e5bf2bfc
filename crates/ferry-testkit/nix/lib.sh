# Helpers shared by the scripts of a test system (installed after a header that sets PATH, `out`
# and the system's settings failActivation, killSshd, unhealthy: "1" or empty).

# Where the running services are recorded (per host: /run is private to a test host).
state=/run/ferry-test
ns_self=$(readlink /proc/self/ns/mnt)

# alive PID: PID is a live process of this host (same mount namespace; zombies have none).
# Never touches a process of the real machine, even if a stale pid file names one.
alive() {
  [ -n "$1" ] && [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$ns_self" ]
}

# swap_link TARGET LINK: point LINK at TARGET atomically (rename over the old link).
swap_link() {
  ln -sfn "$1" "$2.tmp.$$" && mv -fT "$2.tmp.$$" "$2"
}

# listening ADDRESS PORT: a TCP socket listens there.
listening() {
  awk -v want="$(echo "$1" | awk -F. -v p="$2" '{ printf "%02X%02X%02X%02X:%04X", $4, $3, $2, $1, p }')" \
    '$2 == want && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

# start_service NAME STOREPATH: run STOREPATH/run detached (own session, no terminal, output to
# $state/NAME.log) so it outlives the SSH session that started it; wait until it listens.
start_service() {
  mkdir -p "$state/services"
  rm -f "$state/$1.pid"
  setsid sh -c 'echo $$ > "$0"; exec "$1/run"' "$state/$1.pid" "$2" </dev/null >>"$state/$1.log" 2>&1 &
  swap_link "$2" "$state/services/$1"
  i=0
  while [ ! -s "$state/$1.pid" ]; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "service $1: did not start" >&2; return 1; }
    sleep 0.02
  done
  [ -f "$2/listen" ] || return 0
  i=0
  until listening $(cat "$2/listen"); do
    alive "$(cat "$state/$1.pid")" || { echo "service $1: exited (see $state/$1.log)" >&2; return 1; }
    i=$((i + 1)); [ $i -lt 250 ] || { echo "service $1: does not listen on $(cat "$2/listen")" >&2; return 1; }
    sleep 0.02
  done
}

# stop_service NAME: SIGTERM, then SIGKILL after 2 s; forget it.
stop_service() {
  pid=$(cat "$state/$1.pid" 2>/dev/null)
  if alive "$pid"; then
    kill "$pid" 2>/dev/null
    i=0
    while alive "$pid"; do
      i=$((i + 1)); [ $i -ne 100 ] || kill -9 "$pid" 2>/dev/null
      sleep 0.02
    done
  fi
  rm -f "$state/$1.pid" "$state/services/$1"
}

# The host's sshd (started by the test kit, config in /run/ferry-testhost) runs like a service
# every system keeps alive.
sshd_pid() { cat /run/sshd.pid 2>/dev/null; }
start_sshd() {
  [ -f /run/ferry-testhost/sshd_config ] || return 0
  /usr/sbin/sshd -f /run/ferry-testhost/sshd_config -E /run/ferry-testhost/sshd.log
}

