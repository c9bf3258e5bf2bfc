# shellcheck shell=sh
# supervisord through supervisorctl. STATE is the set's state directory: it holds
# supervisord.conf (a link to the profile's) and conf.d/NAME.conf (links to each process's
# program.conf). See common.sh for how ferry calls these functions.

# sv_ctl STATE ARG...: supervisorctl for the set's supervisord.
sv_ctl() {
  c=$1
  shift
  supervisorctl -c "$c/supervisord.conf" "$@"
}

# sv_up STATE RUNTIME LOGDIR PROFILE: supervisord running with the profile's configuration.
# One that is not running (first deploy, or it died) is started without programs: it would
# start every one at once, so the conf.d links are set aside (the switch starts the processes
# level by level, `sv_relink` installing each again); a dead one's socket and PID file go.
sv_up() {
  mkdir -p "$1/conf.d"
  ln -sfn "$4/supervisord.conf" "$1/supervisord.conf"
  p=$(cat "$2/supervisord.pid" 2>/dev/null)
  if [ -z "$p" ] || ! alive "$p" || [ ! -S "$2/supervisord.sock" ]; then
    if [ -n "$p" ] && ! alive "$p"; then rm -f "$2/supervisord.sock" "$2/supervisord.pid"; fi
    for c in "$1"/conf.d/*.conf; do
      if [ -L "$c" ]; then rm -f "$c"; fi
    done
    supervisord -c "$1/supervisord.conf" >>"$3/supervisord.out" 2>&1 </dev/null || exit 1
    i=0
    until [ -S "$2/supervisord.sock" ] && sv_ctl "$1" pid >/dev/null 2>&1; do
      i=$((i + 1))
      [ $i -gt 100 ] && { echo 'supervisord did not come up' >&2; exit 1; }
      sleep 0.1
    done
  fi
}

# sv_link STATE NAME CONFIG [NAME CONFIG]...: install the processes' program.conf.
sv_link() {
  s=$1
  shift
  mkdir -p "$s/conf.d"
  while [ $# -ge 2 ]; do
    ln -sfn "$2/program.conf" "$s/conf.d/$1.conf"
    shift 2
  done
}

# sv_relink STATE ACTIVE NAME...: install the program.conf of installed processes again (a
# supervisord started anew has none), from their installed configs (links in ACTIVE).
sv_relink() {
  s=$1 a=$2
  shift 2
  mkdir -p "$s/conf.d"
  for n in "$@"; do
    c=$(readlink "$a/$n") && ln -sfn "$c/program.conf" "$s/conf.d/$n.conf"
  done
  return 0
}

# sv_unlink STATE NAME...: uninstall the processes' program.conf.
sv_unlink() {
  s=$1
  shift
  for n in "$@"; do
    rm -f "$s/conf.d/$n.conf"
  done
}

# sv_stop STATE NAME...: stop (whether they run or not). `stop` first: `update` alone stops a
# group with stopProcessGroup, which answers only on supervisord's next 1 s tick, for each
# group in turn.
sv_stop() {
  s=$1
  shift
  sv_ctl "$s" stop "$@" >/dev/null 2>&1 || true
}

# sv_update STATE NAME...: re-read the configuration for these groups only: stop and remove
# changed or removed ones, add (autostart) new and changed ones.
sv_update() {
  s=$1
  shift
  sv_ctl "$s" update "$@" >/dev/null
}

# sv_start STATE NAME...: add the groups supervisord does not know (a new supervisord), start.
sv_start() {
  sv_update "$@"
  s=$1
  shift
  sv_ctl "$s" start "$@"
}

# sv_shutdown STATE: stop supervisord and wait for it to exit.
sv_shutdown() {
  if sv_ctl "$1" pid >/dev/null 2>&1; then
    p=$(sv_ctl "$1" pid)
    sv_ctl "$1" shutdown >/dev/null 2>&1
    i=0
    while kill -0 "$p" 2>/dev/null; do
      i=$((i + 1))
      [ $i -gt 200 ] && break
      sleep 0.05
    done
  fi
}
