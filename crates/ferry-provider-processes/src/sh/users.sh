# shellcheck shell=sh
# Users and groups a set's processes run as: created when missing (useradd/groupadd, or
# busybox's adduser/addgroup), recorded in the set's REC file, and removed — only those ferry
# created — when no longer needed. See common.sh for how ferry calls these functions.

has_group() {
  if command -v getent >/dev/null 2>&1; then getent group "$1" >/dev/null; else grep -q "^$1:" /etc/group; fi
}

# users_record REC: where ferry records what it created.
users_record() {
  rec=$1
  { mkdir -p "$(dirname "$rec")" && touch "$rec"; } || exit 1
}

# mkgroup NAME [GID]
mkgroup() {
  has_group "$1" && return 0
  if command -v groupadd >/dev/null 2>&1; then
    groupadd --system ${2:+--gid "$2"} "$1"
  else
    addgroup -S ${2:+-g "$2"} "$1"
  fi || { echo "error: cannot create group $1" >&2; exit 1; }
  echo "group $1" >>"$rec"
  echo "created group $1"
}

# mkuser NAME GROUP [UID]
mkuser() {
  id -u "$1" >/dev/null 2>&1 && return 0
  if command -v useradd >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin ${3:+--uid "$3"} --gid "$2" "$1"
  else
    adduser -S -D -H -h / -s /bin/false ${3:+-u "$3"} -G "$2" "$1"
  fi || { echo "error: cannot create user $1" >&2; exit 1; }
  echo "user $1" >>"$rec"
  echo "created user $1"
}

rmuser() {
  if command -v userdel >/dev/null 2>&1; then userdel "$1"; else deluser "$1"; fi
}

rmgroup() {
  has_group "$1" || return 0
  if command -v groupdel >/dev/null 2>&1; then groupdel "$1"; else delgroup "$1"; fi
}

# users_prune REC KEEP: remove what REC lists and KEEP (lines "user NAME"/"group NAME") does
# not; what cannot be removed stays recorded.
users_prune() {
  rec=$1
  keep=$2
  [ -f "$rec" ] || return 0
  new=$(mktemp "$rec.XXXXXX") || exit 1
  for kind in user group; do
    grep "^$kind " "$rec" | sort -u | while read -r k name; do
      if printf '%s\n' "$keep" | grep -qx "$k $name"; then echo "$k $name" >>"$new"; continue; fi
      if [ "$k" = user ]; then
        rmuser "$name" || { echo "$k $name" >>"$new"; continue; }
      else
        rmgroup "$name" || { echo "$k $name" >>"$new"; continue; }
      fi
      echo "removed $k $name"
    done
  done
  mv -f "$new" "$rec"
}
