# shellcheck shell=sh
# systemd units through systemctl: DIR/UNIT links to the unit in the process's config. See
# common.sh for how ferry calls these functions.

# systemd_status UNIT...: systemctl's Id, ActiveState, SubState and MainPID per unit (blank
# line between units), and for a live main PID "Up=START NOW TCK": its start time (field 22
# of /proc/PID/stat, clock ticks since boot), /proc/uptime and the clock tick rate, so ferry
# can tell how long it has been up. Read on the host, in systemd's PID namespace: a main PID
# with no /proc entry has exited.
systemd_status() {
  systemctl show -p Id,ActiveState,SubState,MainPID "$@" | while IFS= read -r l; do
    printf '%s\n' "$l"
    case $l in
      MainPID=*)
        p=${l#MainPID=}
        if [ "$p" != 0 ] && s=$(cat /proc/"$p"/stat 2>/dev/null); then
          s=${s##*) }
          # shellcheck disable=SC2086 # split the stat line into fields
          set -- $s
          printf 'Up=%s %s %s\n' "${20}" "$(cut -d' ' -f1 /proc/uptime)" "$(getconf CLK_TCK 2>/dev/null || echo 100)"
        fi
        ;;
    esac
  done
}

# systemd_remove DIR UNIT...: stop, disable and uninstall. A unit that failed stays loaded
# (and `systemctl --failed`, the system `degraded`) after its file is gone, unless its
# failure is reset.
systemd_remove() {
  dir=$1
  shift
  for u in "$@"; do
    systemctl stop "$u" || true
    systemctl reset-failed "$u" 2>/dev/null || true
    systemctl disable --quiet "$u" 2>/dev/null || true
    rm -f "$dir/$u"
  done
  systemctl daemon-reload
}

# systemd_install DIR UNIT CONFIG [UNIT CONFIG]...: install the units, enable them (their
# [Install] section: multi-user.target, so they run after a reboot) and (re)start them.
systemd_install() {
  dir=$1
  shift
  mkdir -p "$dir"
  units=
  while [ $# -ge 2 ]; do
    ln -sfn "$2/$1" "$dir/$1"
    units="$units $1"
    shift 2
  done
  systemctl daemon-reload
  for u in $units; do
    systemctl enable --quiet "$u"
    systemctl restart "$u"
  done
}

# systemd_start UNIT...: start installed units.
systemd_start() {
  for u in "$@"; do
    systemctl start "$u"
  done
}
