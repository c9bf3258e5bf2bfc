# ferry's helper for nspawn containers on a host (POSIX sh, run as root): `sh nspawn.sh MODE ARGS…`.
# shellcheck shell=sh
# Uploaded by ferry to /run/ferry (hash-named), or run from there on the local machine.
#
# Layout: /etc/systemd/nspawn/NAME.nspawn (the unit), /var/lib/machines/NAME (root),
# /nix/var/nix/profiles/per-container/NAME/system (profile), /var/lib/ferry/nspawn/NAME (ferry's
# files: owner, net.env, network/, credentials/, unit digest, console.log, and `incomplete` from
# the first prepare until the create completes),
# /var/lib/ferry/nspawn/.addresses/ADDR (address claims: the file holds the owner's name),
# /run/ferry/nspawn/NAME.{supervisor,pid,unit} (direct runtime: supervisor and nspawn PIDs, the
# unit digest the running container was started with).
#
# Runtimes: "systemd" when systemd is PID 1 (systemd-nspawn@NAME.service, machinectl, networkd),
# "direct" otherwise: a detached supervisor (mode `supervise`) sets the network up in a network
# namespace of its own, runs systemd-nspawn in the foreground, and tears the network down when it
# exits.
#
# net.env (sourced) is written by ferry: MODE, IFHOST, BRIDGE, V4_*/V6_*, PORTS.
# shellcheck disable=SC1091,SC2153
set -u
umask 022
PATH=/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH

die() { echo "error: $*" >&2; exit 1; }

# need_name NAME: a container name is never empty, `.`/`..` or a path, so that no
# "/var/lib/machines/$name" below can ever be a parent directory.
need_name() {
  case $1 in
    '' | . | .. | */* | -*) die "invalid container name '$1'" ;;
  esac
}

state_dir() { echo "/var/lib/ferry/nspawn/$1"; }

# util_nsenter: util-linux's nsenter (it has --all), wherever PATH puts another one (busybox's
# comes first on a host whose system is busybox-based, and lacks -a).
util_nsenter() {
  for c in /usr/bin/nsenter /bin/nsenter /usr/sbin/nsenter /run/current-system/sw/bin/nsenter $(command -v nsenter); do
    if [ -x "$c" ] && "$c" --help 2>&1 | grep -q -- '--all'; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# write_file PATH MODE < content: atomically, never through a symlink (see `write`).
write_file() {
  wf_tmp=$(mktemp "$(dirname "$1")/.ferry-write.XXXXXXXX") || return 1
  if chmod "$2" "$wf_tmp" && cat > "$wf_tmp" && mv -T -f "$wf_tmp" "$1"; then
    return 0
  fi
  rm -f "$wf_tmp"
  return 1
}
RUN=/run/ferry/nspawn
CLAIMS=/var/lib/ferry/nspawn/.addresses
profile() { echo "/nix/var/nix/profiles/per-container/$1/system"; }

runtime() {
  if [ -d /run/systemd/system ] && [ "${FERRY_NSPAWN_RUNTIME:-}" != direct ]; then echo systemd; else echo direct; fi
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# The container's PID 1, seen from the host (empty when not running).
leader() {
  if [ "$(runtime)" = systemd ]; then
    l=$(machinectl show "$1" -p Leader --value 2>/dev/null)
    [ "$l" != 0 ] && echo "$l"
    return 0
  fi
  np=$(cat "$RUN/$1.pid" 2>/dev/null)
  alive "$np" || return 0
  # nspawn's only child is the container's PID 1.
  if [ -r "/proc/$np/task/$np/children" ]; then
    # shellcheck disable=SC2046 # split on purpose: one PID per word
    set -- $(cat "/proc/$np/task/$np/children")
    [ -n "${1:-}" ] && echo "$1"
    return 0
  fi
  for p in /proc/[0-9]*; do
    pp=$(sed -n 's/^PPid:[[:space:]]*//p' "$p/status" 2>/dev/null)
    if [ "$pp" = "$np" ]; then echo "${p#/proc/}"; return 0; fi
  done
}

current() { l=$(leader "$1"); [ -n "$l" ] && readlink "/proc/$l/root/run/current-system" 2>/dev/null; return 0; }

# ---------------------------------------------------------------- network (direct runtime)

net_up() {
  name=$1
  . "$(state_dir "$name")/net.env"
  [ "$MODE" = host ] && return 0
  ns=ferry-$name
  net_down "$name"
  ip netns add "$ns" || return 1
  ip link add "$IFHOST" type veth peer name host0 netns "$ns" || return 1
  ip -n "$ns" link set lo up
  ip -n "$ns" link set host0 up
  if [ "$MODE" = zone ]; then
    # Under the zone's lock: the last container leaving removes the bridge (net_down).
    mkdir -p "$RUN"
    (
      flock 9
      ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge || exit 1
      ip link set "$BRIDGE" up
      ip link set "$IFHOST" master "$BRIDGE" || exit 1
    ) 9>"$RUN/zone-$BRIDGE.lock" || return 1
  fi
  ip link set "$IFHOST" up
  if [ -n "$V4_ADDR" ]; then
    if [ "$MODE" = zone ]; then
      [ -z "$V4_HOST" ] || ip addr replace "$V4_HOST/$V4_HOST_PREFIX" dev "$BRIDGE"
      ip -n "$ns" addr add "$V4_ADDR/$V4_PREFIX" dev host0 || return 1
    else
      ip addr replace "$V4_HOST/32" dev "$IFHOST"
      ip route replace "$V4_ADDR/32" dev "$IFHOST" src "$V4_HOST" || return 1
      ip -n "$ns" addr add "$V4_ADDR/32" dev host0 || return 1
      ip -n "$ns" route add "$V4_HOST/32" dev host0
    fi
    [ -z "$V4_HOST" ] || ip -n "$ns" route add default via "$V4_HOST" dev host0 onlink
  fi
  if [ -n "$V6_ADDR" ]; then
    if [ "$MODE" = zone ]; then
      [ -z "$V6_HOST" ] || ip -6 addr replace "$V6_HOST/$V6_HOST_PREFIX" dev "$BRIDGE" nodad
      ip -n "$ns" -6 addr add "$V6_ADDR/$V6_PREFIX" dev host0 nodad || return 1
    else
      ip -6 addr replace "$V6_HOST/128" dev "$IFHOST" nodad
      ip -6 route replace "$V6_ADDR/128" dev "$IFHOST" || return 1
      ip -n "$ns" -6 addr add "$V6_ADDR/128" dev host0 nodad || return 1
      ip -n "$ns" -6 route add "$V6_HOST/128" dev host0
    fi
    [ -z "$V6_HOST" ] || ip -n "$ns" -6 route add default via "$V6_HOST" dev host0 onlink
  fi
  if [ -n "$PORTS" ]; then
    dev=$IFHOST; [ "$MODE" = zone ] && dev=$BRIDGE
    # Connections from the host itself to 127.0.0.1:PORT are rewritten too: allow routing
    # loopback sources on the container's link and masquerade them.
    sysctl -qw "net.ipv4.conf.$dev.route_localnet=1" 2>/dev/null || echo 1 > "/proc/sys/net/ipv4/conf/$dev/route_localnet"
    rules=""
    for p in $PORTS; do
      proto=${p%%:*}; rest=${p#*:}; hp=${rest%%:*}; cp=${rest#*:}
      rules="$rules fib daddr type local $proto dport $hp dnat to $V4_ADDR:$cp;"
    done
    nft -f - <<EOF || return 1
table ip ferry-ct-$name {
  chain pre { type nat hook prerouting priority dstnat; policy accept; $rules }
  chain out { type nat hook output priority -100; policy accept; $rules }
  chain post { type nat hook postrouting priority srcnat; policy accept; ip saddr 127.0.0.0/8 ip daddr $V4_ADDR masquerade; }
}
EOF
  fi
}

net_down() {
  name=$1
  [ -f "$(state_dir "$name")/net.env" ] && . "$(state_dir "$name")/net.env"
  ip netns del "ferry-$name" 2>/dev/null
  [ -n "${IFHOST:-}" ] && ip link del "$IFHOST" 2>/dev/null
  command -v nft >/dev/null 2>&1 && nft delete table ip "ferry-ct-$name" 2>/dev/null
  # The zone's bridge goes with its last member (under the zone's lock, see net_up).
  if [ "${MODE:-}" = zone ] && [ -n "${BRIDGE:-}" ] && [ -d "/sys/class/net/$BRIDGE" ]; then
    mkdir -p "$RUN"
    (
      flock 9
      [ -z "$(ls "/sys/class/net/$BRIDGE/brif" 2>/dev/null)" ] && ip link del "$BRIDGE" 2>/dev/null
    ) 9>"$RUN/zone-$BRIDGE.lock"
  fi
  return 0
}

# ---------------------------------------------------------------- modes

mode=${1:-}; shift || true
case "$mode" in

probe)
  # probe NAME [complete]: key=value lines. With `complete` (the end of a deploy that
  # completed), the container's `incomplete` mark is cleared first.
  name=$1 s=$(state_dir "$1")
  if [ "${2:-}" = complete ]; then need_name "$name"; rm -f "$s/incomplete"; fi
  echo "runtime=$(runtime)"
  [ -f "/etc/systemd/nspawn/$name.nspawn" ] && echo "exists=1"
  echo "owner=$(cat "$s/owner" 2>/dev/null)"
  [ -f "$s/incomplete" ] && echo "incomplete=1"
  [ -d "/var/lib/machines/$name" ] && echo "root=1"
  [ -d "$s" ] && echo "files=1"
  l=$(leader "$name")
  echo "leader=$l"
  [ -n "$l" ] && echo "current=$(readlink "/proc/$l/root/run/current-system" 2>/dev/null)"
  echo "profile=$(readlink -f "$(profile "$name")" 2>/dev/null)"
  echo "link=$(readlink "$(profile "$name")" 2>/dev/null)"
  echo "unit=$(cat "$s/unit.digest" 2>/dev/null)"
  if [ "$(runtime)" = systemd ]; then
    [ -n "$l" ] && echo "started=$(cat "$s/unit.started" 2>/dev/null)"
  else
    [ -n "$l" ] && echo "started=$(cat "$RUN/$name.unit" 2>/dev/null)"
  fi
  echo "nspawnSha256=$(sha256sum "/etc/systemd/nspawn/$name.nspawn" 2>/dev/null | cut -d' ' -f1)"
  echo "address=$(cat "$s/address" 2>/dev/null)"
  echo "address6=$(cat "$s/address6" 2>/dev/null)"
  command -v systemd-nspawn >/dev/null 2>&1 && echo "nspawn=1"
  command -v nft >/dev/null 2>&1 && echo "nft=1"
  command -v ip >/dev/null 2>&1 && echo "ip=1"
  exit 0
  ;;

claims)
  # claims: "ADDRESS OWNER" per claimed address on this host (nothing when there is none: with
  # no claim the glob stays unexpanded, which is no file and no failure).
  mkdir -p "$CLAIMS" || die "cannot create $CLAIMS"
  for f in "$CLAIMS"/*; do
    [ -f "$f" ] || continue
    echo "${f##*/} $(cat "$f")"
  done
  exit 0
  ;;

claim)
  # claim NAME ADDRESS: take ADDRESS for NAME (atomic: O_EXCL); exit 4 if another has it.
  mkdir -p "$CLAIMS"
  f="$CLAIMS/$2"
  if ( set -C; echo "$1" > "$f" ) 2>/dev/null; then exit 0; fi
  [ "$(cat "$f" 2>/dev/null)" = "$1" ] && exit 0
  echo "owner=$(cat "$f" 2>/dev/null)"
  exit 4
  ;;

release)
  # release NAME ADDRESS…: drop NAME's claims on these addresses.
  name=$1; shift
  for a in "$@"; do
    [ "$(cat "$CLAIMS/$a" 2>/dev/null)" = "$name" ] && rm -f "$CLAIMS/$a"
  done
  exit 0
  ;;

write)
  # write PATH MODE < content: atomically. A zone's networkd files are written under the zone's
  # lock, so that a neighbour's destroy (which removes them with the zone's last container)
  # never removes them under a container that is joining the zone.
  # Never through a symlink: the temporary file is created exclusively under an unpredictable
  # name (mktemp), gets its mode before its content, and is renamed over the destination, which
  # replaces a symlink there instead of writing through it.
  mkdir -p "$(dirname "$1")" || exit 1
  case "$1" in
    /etc/systemd/network/50-ferry-zone-*)
      z=${1##*/50-ferry-zone-}; z=${z%.*}
      mkdir -p "$RUN" || exit 1
      (
        flock 9
        write_file "$1" "$2"
      ) 9>"$RUN/zone-vz-$z.lock"
      ;;
    *) write_file "$1" "$2" ;;
  esac
  ;;

read-file)
  cat "$1"
  ;;

remove-files)
  rm -f "$@"
  ;;

prepare)
  # prepare NAME SYSTEM OWNER: the root directory, profile and GC-root directories; checks the
  # system is a container toplevel. A container that had no owner yet is being created: it is
  # marked `incomplete` (before anything is claimed for it) until the create completes.
  name=$1 system=$2
  [ -x "$system/init" ] || die "$system has no init: not a NixOS container toplevel (build config.system.build.toplevel of a configuration with boot.isContainer = true)"
  s=$(state_dir "$name")
  root=/var/lib/machines/$name
  mkdir -p "$s/network" "$root/etc" "$root/usr" "$root/var" "$root/tmp" "$root/run" "$root/nix/store" \
    "$root/nix/var/nix/profiles" "$root/nix/var/nix/gcroots" \
    "/nix/var/nix/profiles/per-container/$name" "/nix/var/nix/gcroots/per-container/$name" || exit 1
  [ -e "$root/etc/os-release" ] || touch "$root/etc/os-release"
  chmod 0700 "$s"
  [ -f "$s/owner" ] || : > "$s/incomplete" || exit 1
  [ -n "${3:-}" ] && echo "$3" > "$s/owner"
  exit 0
  ;;

set-profile)
  # set-profile NAME SYSTEM: a new generation (unless the profile already points there).
  p=$(profile "$1")
  if [ "$(readlink -f "$p" 2>/dev/null)" != "$2" ]; then
    nix-env -p "$p" --set "$2" >/dev/null || exit 1
  fi
  echo "link=$(readlink "$p")"
  ;;

start)
  # start NAME DIGEST WAIT: start and wait (up to WAIT s) until its init has activated the
  # profile's system (/run/current-system inside).
  name=$1 digest=$2 wait=${3:-30} s=$(state_dir "$1")
  l=$(leader "$name")
  if [ -z "$l" ]; then
    command -v systemd-nspawn >/dev/null 2>&1 || die "systemd-nspawn is not installed on this host (Debian: apt-get install systemd-container)"
    if [ "$(runtime)" = systemd ]; then
      networkctl reload 2>/dev/null
      systemctl start "systemd-nspawn@$name.service" || die "systemctl start systemd-nspawn@$name failed (journalctl -u systemd-nspawn@$name)"
      echo "$digest" > "$s/unit.started"
    else
      mkdir -p "$RUN"
      rm -f "$RUN/$name.pid" "$RUN/$name.exit"
      echo "$digest" > "$RUN/$name.unit"
      : >> "$s/console.log"
      setsid sh "$0" supervise "$name" </dev/null >>"$s/console.log" 2>&1 &
    fi
  fi
  want=$(readlink -f "$(profile "$name")")
  i=0
  while :; do
    l=$(leader "$name")
    if [ -n "$l" ] && [ "$(readlink "/proc/$l/root/run/current-system" 2>/dev/null)" = "$want" ]; then break; fi
    if [ "$(runtime)" = direct ] && [ -f "$RUN/$name.exit" ]; then
      echo "error: container $name exited (status $(cat "$RUN/$name.exit")); last lines of $s/console.log:" >&2
      tail -n 15 "$s/console.log" >&2
      exit 1
    fi
    i=$((i + 1))
    if [ $i -gt $((wait * 10)) ]; then
      echo "error: container $name did not activate $want within $wait s; last lines of $s/console.log:" >&2
      tail -n 15 "$s/console.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "leader=$l"
  ;;

supervise)
  # supervise NAME (direct runtime, detached): network up, systemd-nspawn in the foreground,
  # network down when it exits.
  name=$1
  echo $$ > "$RUN/$name.supervisor"
  . "$(state_dir "$name")/net.env"
  if ! net_up "$name"; then
    echo "ferry: setting up the network of $name failed" >&2
    net_down "$name"
    echo 1 > "$RUN/$name.exit"
    rm -f "$RUN/$name.supervisor"
    exit 1
  fi
  netarg=""
  # The namespace ferry set up replaces the unit's [Network] section; --private-network keeps
  # nspawn's port handling (Port=) from refusing to start (ferry forwards the ports itself).
  [ "$MODE" = host ] || netarg="--network-namespace-path=/run/netns/ferry-$name --private-network"
  # shellcheck disable=SC2086 # $netarg: no option or two, split on purpose
  systemd-nspawn --quiet --keep-unit --register=no --settings=trusted -M "$name" \
    -D "/var/lib/machines/$name" $netarg &
  echo $! > "$RUN/$name.pid"
  wait $!
  rc=$?
  net_down "$name"
  rm -f "$RUN/$name.pid" "$RUN/$name.supervisor"
  echo "$rc" > "$RUN/$name.exit"
  ;;

stop)
  # stop NAME TIMEOUT
  name=$1 timeout=${2:-10}
  if [ "$(runtime)" = systemd ]; then
    systemctl stop "systemd-nspawn@$name.service" 2>/dev/null
    exit 0
  fi
  np=$(cat "$RUN/$name.pid" 2>/dev/null)
  sup=$(cat "$RUN/$name.supervisor" 2>/dev/null)
  if alive "$np"; then
    l=$(leader "$name")
    kill -TERM "$np"
    i=0
    while alive "$np"; do
      i=$((i + 1))
      if [ $i -eq $((timeout * 10)) ]; then
        echo "container $name did not stop within $timeout s: killing it" >&2
        [ -n "$l" ] && kill -KILL "$l" 2>/dev/null
      fi
      [ $i -lt $((timeout * 10 + 100)) ] || { kill -KILL "$np" 2>/dev/null; break; }
      sleep 0.1
    done
  fi
  i=0
  while alive "$sup" && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.05; done
  net_down "$name"
  rm -f "$RUN/$name.pid" "$RUN/$name.supervisor"
  ;;

reload)
  # reload NAME [PREV_LINK]: switch-to-configuration test inside the running container. Prints
  # result=ok, or, when it failed, its last lines as `output: …` and result=rolled-back or
  # result=rollback-failed: the profile goes back to PREV_LINK (its generation before this
  # deploy; the failed generation's link is removed) and, if the running system changed, the
  # one that ran before is activated again, so the profile never claims a system that does not
  # run (a restart would boot it).
  name=$1 prev=${2:-}
  l=$(leader "$name")
  [ -n "$l" ] || die "container $name is not running"
  ns=$(util_nsenter) || die "nsenter from util-linux (with --all) is missing on this host"
  before=$(current "$name")
  log=$(mktemp) || exit 1
  inside() { PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin "$ns" -t "$l" -a -- "$@"; }
  if inside /nix/var/nix/profiles/system/bin/switch-to-configuration test >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "result=ok"
    exit 0
  fi
  tail -n 15 "$log" | sed 's/^/output: /'
  rm -f "$log"
  ok=0
  p=$(profile "$name")
  new=$(readlink "$p" 2>/dev/null)
  if [ -n "$prev" ] && [ "$new" != "$prev" ]; then
    g=${prev%-link}; g=${g##*-}
    if nix-env -p "$p" --switch-generation "$g" >/dev/null 2>&1; then
      rm -f "$(dirname "$p")/$new"
    else
      ok=1
    fi
  fi
  if [ -n "$before" ] && [ "$(current "$name")" != "$before" ]; then
    inside "$before/bin/switch-to-configuration" test >/dev/null 2>&1 || ok=1
  fi
  if [ $ok = 0 ]; then echo "result=rolled-back"; else echo "result=rollback-failed"; fi
  ;;

exec)
  # exec NAME CMD…: run CMD inside the container.
  name=$1; shift
  l=$(leader "$name")
  [ -n "$l" ] || die "container $name is not running (ferry container start $name)"
  ns=$(util_nsenter) || die "nsenter from util-linux (with --all) is missing on this host"
  PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin:/bin:/usr/bin "$ns" -t "$l" -a -- "$@"
  ;;

enable)
  # enable NAME yes|no: start at boot (systemd runtime; the direct runtime has no boot hook).
  [ "$(runtime)" = systemd ] || exit 0
  if [ "$2" = yes ]; then systemctl enable "systemd-nspawn@$1.service" >/dev/null 2>&1
  else systemctl disable "systemd-nspawn@$1.service" >/dev/null 2>&1; fi
  exit 0
  ;;

generations)
  nix-env -p "$(profile "$1")" --list-generations
  ;;

switch-generation)
  # switch-generation NAME GEN|previous
  p=$(profile "$1")
  if [ "$2" = previous ]; then nix-env -p "$p" --rollback >/dev/null || exit 1
  else nix-env -p "$p" --switch-generation "$2" >/dev/null || exit 1; fi
  echo "link=$(readlink "$p")"
  echo "profile=$(readlink -f "$p")"
  ;;

list)
  # list: "NAME OWNER STATE ADDRESS…" for everything of ferry's containers on this host. OWNER is
  # deployment, imperative or - (none); STATE is running or stopped, incomplete (a create that did
  # not complete), kept (no owner: the data and addresses kept by `keepState`) or claim (only an
  # address claim is left).
  for d in /var/lib/ferry/nspawn/*; do
    [ -d "$d" ] || continue
    name=${d##*/}
    owner=$(cat "$d/owner" 2>/dev/null); [ -n "$owner" ] || owner=-
    l=$(leader "$name")
    st=stopped; [ -n "$l" ] && st=running
    [ "$owner" = - ] && st=kept
    [ -f "$d/incomplete" ] && st=incomplete
    echo "$name $owner $st $(cat "$d/address" 2>/dev/null) $(cat "$d/address6" 2>/dev/null)"
  done
  for f in "$CLAIMS"/*; do
    [ -f "$f" ] || continue
    holder=$(cat "$f" 2>/dev/null)
    [ -n "$holder" ] && [ ! -d "/var/lib/ferry/nspawn/$holder" ] && echo "$holder - claim ${f##*/}"
  done
  exit 0
  ;;

destroy)
  # destroy NAME PURGE(yes|no): stop first; remove the unit, network files, profile, GC roots and
  # address claims; the root directory too with PURGE.
  need_name "$1"
  name=$1 purge=$2 s=$(state_dir "$1")
  [ -f "$s/net.env" ] && . "$s/net.env"
  rm -f "/etc/systemd/nspawn/$name.nspawn" "/etc/systemd/network/50-ferry-ct-$name.network"
  rm -rf "/nix/var/nix/profiles/per-container/$name" "/nix/var/nix/gcroots/per-container/$name"
  # A zone's networkd files go with its last container (other members name the zone's bridge
  # in their 50-ferry-ct-NAME.network; under the zone's lock, see `write`).
  if [ "${MODE:-}" = zone ] && [ -n "${BRIDGE:-}" ]; then
    mkdir -p "$RUN"
    (
      flock 9
      for f in /etc/systemd/network/50-ferry-ct-*.network; do
        [ -f "$f" ] || continue
        grep -qx "Bridge=$BRIDGE" "$f" && exit 0
      done
      rm -f "/etc/systemd/network/50-ferry-zone-${BRIDGE#vz-}.netdev" \
        "/etc/systemd/network/50-ferry-zone-${BRIDGE#vz-}.network"
    ) 9>"$RUN/zone-$BRIDGE.lock"
  fi
  if [ "$purge" = yes ]; then
    for f in "$CLAIMS"/*; do
      [ -f "$f" ] || continue
      [ "$(cat "$f" 2>/dev/null)" = "$name" ] && rm -f "$f"
    done
    rm -rf "/var/lib/machines/$name" "$s"
  else
    rm -f "$s/owner" "$s/unit.digest" "$s/incomplete"
  fi
  rm -f "$RUN/$name.unit" "$RUN/$name.exit"
  exit 0
  ;;

*)
  die "nspawn.sh: unknown mode '$mode'"
  ;;
esac
