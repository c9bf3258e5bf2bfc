# shellcheck shell=sh
# sysvinit-style init.d scripts (each process's config has one): STATE/init.d/NAME links to it;
# its pid file is RUNTIME/NAME.pid. See common.sh for how ferry calls these functions.

# sysv_status RUNTIME NAME...: "NAME running PID" or "NAME stopped" (a zombie is stopped).
sysv_status() {
  rt=$1
  shift
  for n in "$@"; do
    p=$(cat "$rt/$n.pid" 2>/dev/null)
    s=
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      s=$(cat /proc/"$p"/stat 2>/dev/null)
      s=${s##*) }
      s=${s%% *}
    fi
    if [ -n "$p" ] && [ -n "$s" ] && [ "$s" != Z ]; then echo "$n" running "$p"; else echo "$n" stopped; fi
  done
}

# sysv_remove STATE NAME...: stop and uninstall.
sysv_remove() {
  st=$1
  shift
  for n in "$@"; do
    i=$st/init.d/$n
    if [ -e "$i" ]; then "$i" stop; fi
    rm -f "$i"
  done
}

# sysv_install STATE NAME CONFIG WAS-INSTALLED: (stop the old one,) install and start.
sysv_install() {
  i=$1/init.d/$2
  mkdir -p "$1/init.d"
  if [ "$4" = 1 ] && [ -e "$i" ]; then "$i" stop; fi
  ln -sfn "$3/init.d" "$i"
  "$i" start
}

# sysv_start STATE NAME...: start installed processes.
sysv_start() {
  st=$1
  shift
  for n in "$@"; do
    "$st/init.d/$n" start
  done
}
