# shellcheck shell=sh
# s6 through s6-svscan, s6-svc and s6-svstat. SCAN is the set's scan directory; a process's
# service directory SCAN/NAME links to its config. See common.sh for how ferry calls these.

# s6_up SCAN PIDFILE LOG: s6-svscan running on the scan directory. One that is not running
# (first deploy, or it died): services left without their s6-supervise are marked down first,
# or the new s6-svscan would start every one at once (the switch starts them level by level,
# in fresh directories); it is up when it answers s6-svscanctl (a dead one leaves its FIFO).
s6_up() {
  mkdir -p "$1"
  p=$(cat "$2" 2>/dev/null)
  if [ -z "$p" ] || ! alive "$p"; then
    for d in "$1"/*; do
      if [ -d "$d" ] && ! s6-svok "$d" 2>/dev/null; then : >"$d/down"; fi
    done
    setsid s6-svscan "$1" >>"$3" 2>&1 </dev/null &
    echo $! >"$2"
    i=0
    until s6-svscanctl -a "$1" 2>/dev/null; do
      i=$((i + 1))
      [ $i -gt 100 ] && { echo 's6-svscan did not come up' >&2; exit 1; }
      sleep 0.05
    done
  fi
}

# s6_status SCAN NAME...: "NAME UP PID SECONDS WANTEDUP EXITCODE", or "NAME missing".
s6_status() {
  scan=$1
  shift
  for n in "$@"; do
    printf '%s ' "$n"
    if [ -d "$scan/$n/supervise" ]; then
      s6-svstat -o up,pid,updownfor,wantedup,exitcode "$scan/$n" 2>/dev/null || echo unknown
    else
      echo missing
    fi
  done
}

# s6_drop SCAN NAME: stop the service, end its s6-supervise, remove its directory. The
# directory is first renamed to a dot name, which s6-svscan ignores: otherwise it would start
# a new s6-supervise for it as soon as the old one exits.
s6_drop() {
  d=$1/$2
  old=$1/.$2.old
  rm -rf "$old"
  if [ -d "$d" ]; then
    mv -T "$d" "$old"
    if [ -d "$old/supervise" ] && s6-svok "$old" 2>/dev/null; then
      s6-svc -wD -T 30000 -d "$old" || true
      s6-svc -x "$old" || true
      i=0
      while s6-svok "$old" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 200 ] && break
        sleep 0.05
      done
    fi
    rm -rf "$old"
  fi
}

# s6_create SCAN NAME CONFIG: a service directory for CONFIG, moved into place whole
# (s6-svscan may scan at any time); `mv -T` never moves it *into* a directory left there.
s6_create() {
  d=$1/$2
  tmp=$1/.$2.new
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for f in run finish timeout-kill dependencies; do
    if [ -e "$3/$f" ]; then ln -s "$3/$f" "$tmp/$f"; fi
  done
  ln -s "$3" "$tmp/config"
  mv -T "$tmp" "$d"
}

# s6_rescan SCAN: s6-svscan picks up new service directories now.
s6_rescan() {
  s6-svscanctl -a "$1"
}

# s6_rescan_quiet SCAN: also reap the removed ones; s6-svscan may be gone already.
s6_rescan_quiet() {
  s6-svscanctl -an "$1" 2>/dev/null || true
}

# s6_shutdown SCAN PIDFILE: stop s6-svscan and wait for it to exit.
s6_shutdown() {
  p=$(cat "$2" 2>/dev/null)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    s6-svscanctl -t "$1" 2>/dev/null || kill "$p"
    i=0
    while kill -0 "$p" 2>/dev/null; do
      i=$((i + 1))
      [ $i -gt 200 ] && break
      sleep 0.05
    done
  fi
  rm -f "$2"
}
