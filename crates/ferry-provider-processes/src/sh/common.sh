# shellcheck shell=sh
# The processes provider's shell functions on a set's host (the local machine, an SSH target
# or a podman container). ferry includes this file (include_str!) and the manager's file before
# the function calls of one operation; every argument of a call is one quoted word. Functions
# only: nothing here runs on its own. Exit status of an operation: its last call's.

# alive PID: the process exists and is not a zombie (a daemon killed a moment ago stays one
# until its parent, often init, reaps it, and `kill -0` still succeeds). Shell builtins only.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 0
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

# ensure_dirs DIR...: the set's directories.
ensure_dirs() {
  mkdir -p "$@"
}

# list_active DIR: "NAME CONFIG" for each process installed (a link in DIR to its config).
list_active() {
  [ -d "$1" ] || return 0
  for l in "$1"/*; do
    [ -L "$l" ] && printf '%s %s\n' "${l##*/}" "$(readlink "$l")"
  done
  return 0
}

# set_active DIR NAME CONFIG [NAME CONFIG]...: record what is installed.
set_active() {
  d=$1
  shift
  mkdir -p "$d"
  while [ $# -ge 2 ]; do
    ln -sfn "$2" "$d/$1"
    shift 2
  done
}

# unset_active DIR NAME...: forget installed processes.
unset_active() {
  d=$1
  shift
  for n in "$@"; do
    rm -f "$d/$n"
  done
}

# tcp_listening HEXPORT: something listens on the port (/proc/net/tcp{,6}, state 0A).
tcp_listening() {
  grep -qE "^ *[0-9]+: [0-9A-F]+:$1 [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# profile_read PROFILE: its generation link and store path, when it exists.
profile_read() {
  if [ -L "$1" ]; then
    readlink "$1"
    readlink -f "$1"
  fi
}

# profile_set PROFILE STORE [NIX-ARG]...: a new generation pointing to STORE.
profile_set() {
  p=$1
  s=$2
  shift 2
  mkdir -p "$(dirname "$p")"
  if command -v nix-env >/dev/null 2>&1; then
    nix-env "$@" -p "$p" --set "$s" >/dev/null
    return
  fi
  # No Nix here (a container): the generation links nix-env would make.
  n=0
  for l in "$p"-[0-9]*-link; do
    [ -L "$l" ] || continue
    g=${l#"$p"-}
    g=${g%-link}
    [ "$g" -gt "$n" ] && n=$g
  done
  n=$((n + 1))
  ln -sfn "$s" "$p-$n-link" && ln -sfn "$(basename "$p")-$n-link" "$p"
}

# profile_generations PROFILE: "LINK STORE" for each generation.
profile_generations() {
  for l in "$1"-[0-9]*-link; do
    [ -L "$l" ] && printf '%s %s\n' "$l" "$(readlink "$l")"
  done
  return 0
}

# profile_switch PROFILE GENERATION [NIX-ARG]...: point the profile to a generation.
profile_switch() {
  p=$1
  g=$2
  shift 2
  if command -v nix-env >/dev/null 2>&1; then
    nix-env "$@" -p "$p" --switch-generation "$g" >/dev/null
  else
    ln -sfn "$(basename "$p")-$g-link" "$p"
  fi
}

# profile_remove PROFILE: the profile and its generations.
profile_remove() {
  rm -f "$1"
  for l in "$1"-[0-9]*-link; do
    [ -L "$l" ] && rm -f "$l"
  done
  return 0
}
