# shellcheck shell=sh
# ferry's helper on a NixOS host (POSIX sh). Uploaded to /run/ferry/ by the nixos provider and
# run as root (through sudo when logging in as another user). One entry point per mode:
#
#   probe PROFILE [KEYFILE...]          facts about the host, as key=value lines; keys as
#                                       `key=N MODE USER GROUP`, `key=N missing` or `key=N symlink`
#                                       (N: the key's position among the KEYFILE arguments, so a
#                                       path with spaces cannot be misread)
#   activate SYSTEM PROFILE GOAL MAGIC ONFAIL TOKEN
#                                       set the profile, switch-to-configuration GOAL; on failure
#                                       roll back (ONFAIL=1); with MAGIC>0 seconds leave a canary
#                                       and a watchdog that rolls back unless the canary is removed
#   rollback PROFILE GOAL PREV_CURRENT PREV_LINK NEW_LINK
#   key DEST USER GROUP PERMS           content on stdin, written atomically: a new temporary file
#                                       (mktemp: O_EXCL, unpredictable name) gets owner and mode
#                                       first, then the content, then is renamed over DEST
#   rmkey PATH...                       remove keys (a symlink is removed, never followed)
#   generations PROFILE
#   switch-generation PROFILE GEN       (GEN empty: the previous one) then activate it
#   gc PROFILE KEEP
#
# Exit codes of activate: 0 ok, 10 cannot set the profile, 20 activation failed and was rolled
# back, 21 activation failed and the rollback failed too, 22 activation failed (no rollback).
# Exit code 4 (any mode): a directory ferry would write in or remove from is not safe (see
# safe_dir); 5: /run/ferry itself is not safe.
#
# File safety: every file this helper writes is in a directory only root can change (safe_dir),
# so no one else can swap a path between two operations; temporary files are created
# exclusively (mktemp, or noclobber for the canary); a symlink is never followed when writing,
# changing the owner or mode of, or removing a file.
set -u
state=/run/ferry
self=$0

log() { echo "ferry: $*" >&2; }

# The store path a link resolves to, or nothing if it does not exist (`readlink -f` alone
# prints the path of a missing link).
target() { if [ -e "$1" ]; then readlink -f "$1" || true; fi; }

gen_of() { # system-12-link -> 12
    l=$(basename "$1"); l=${l%-link}; echo "${l##*-}"
}

probe() {
    profile=$1; shift
    echo "current=$(target /run/current-system)"
    echo "profile=$(target "$profile")"
    echo "link=$(readlink "$profile" 2>/dev/null || true)"
    echo "boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)"
    n=0
    for k in "$@"; do
        if [ -L "$k" ]; then
            echo "key=$n symlink"
        elif [ -f "$k" ]; then
            echo "key=$n $(stat -c '%a %U %G' "$k" 2>/dev/null)"
        else
            echo "key=$n missing"
        fi
        n=$((n + 1))
    done
}

# Back to what ran before: the profile's previous generation and the previous running system.
rollback() {
    profile=$1 goal=$2 prev_current=$3 prev_link=$4 new_link=$5
    ok=0
    if [ "$goal" = switch ] || [ "$goal" = boot ]; then
        if [ -n "$prev_link" ]; then
            nix-env -p "$profile" --switch-generation "$(gen_of "$prev_link")" >&2 || ok=1
        else
            rm -f "$profile" || ok=1
        fi
        if [ -n "$new_link" ] && [ "$new_link" != "$prev_link" ]; then
            rm -f "$(dirname "$profile")/$new_link"
        fi
    fi
    case "$goal" in
        switch|test)
            if [ -n "$prev_current" ] && [ -x "$prev_current/bin/switch-to-configuration" ]; then
                "$prev_current/bin/switch-to-configuration" "$goal" >&2 || ok=1
            fi ;;
        boot)
            prev=$(target "$profile")
            if [ -n "$prev" ] && [ -x "$prev/bin/switch-to-configuration" ]; then
                "$prev/bin/switch-to-configuration" boot >&2 || ok=1
            fi ;;
    esac
    return $ok
}

watchdog() {
    token=$1 timeout=$2; shift 2
    end=$(( $(date +%s) + timeout ))
    while [ "$(date +%s)" -lt "$end" ]; do
        [ -e "$state/canary-$token" ] || exit 0
        sleep 0.2
    done
    rm -f "$state/canary-$token"
    log "no confirmation within ${timeout}s: rolling back"
    if rollback "$@"; then
        echo ok > "$state/rolled-back-$token"
    else
        echo failed > "$state/rolled-back-$token"
    fi
}

activate() {
    system=$1 profile=$2 goal=$3 magic=$4 onfail=$5 token=$6
    prev_current=$(target /run/current-system)
    prev_link=$(readlink "$profile" 2>/dev/null || true)
    new_link=$prev_link
    echo "prev_current=$prev_current"
    echo "prev_link=$prev_link"
    if [ "$goal" = switch ] || [ "$goal" = boot ]; then
        pdir=$(dirname "$profile")
        (umask 022 && mkdir -p "$pdir") || { log "cannot create $pdir"; exit 10; }
        # nix-env replaces links in the profile's directory: it must be root's alone too.
        safe_dir "$pdir" || { log "refusing to set profile $profile: $pdir is not safe"; exit 10; }
        nix-env -p "$profile" --set "$system" >&2 || { log "cannot set profile $profile"; exit 10; }
        new_link=$(readlink "$profile")
    fi
    echo "new_link=$new_link"
    if ! "$system/bin/switch-to-configuration" "$goal" >&2; then
        log "switch-to-configuration $goal failed"
        if [ "$goal" = dry-activate ]; then exit 22; fi
        if [ "$onfail" = 1 ]; then
            if rollback "$profile" "$goal" "$prev_current" "$prev_link" "$new_link"; then
                log "rolled back"
                exit 20
            fi
            log "rollback failed"
            exit 21
        fi
        exit 22
    fi
    if [ "$magic" -gt 0 ] && [ "$goal" != dry-activate ] && [ "$goal" != boot ]; then
        (set -C && : > "$state/canary-$token") || { log "cannot create the canary"; exit 22; }
        rm -f "$state/rolled-back-$token"
        if command -v setsid >/dev/null 2>&1; then
            setsid sh "$self" watchdog "$token" "$magic" "$profile" "$goal" "$prev_current" "$prev_link" "$new_link" \
                </dev/null >>"$state/watchdog-$token.log" 2>&1 &
        else
            nohup sh "$self" watchdog "$token" "$magic" "$profile" "$goal" "$prev_current" "$prev_link" "$new_link" \
                </dev/null >>"$state/watchdog-$token.log" 2>&1 &
        fi
    fi
    echo "done=1"
}

# Is PATH root's alone: owned by root and, for a directory, writable by no one else unless sticky
# (like /tmp, where no one else may rename or remove root's entries)? A symlink owned by root
# passes: only root can change it, and what it points to is checked separately.
root_only() {
    s=$(stat -c '%u %a' "$1" 2>/dev/null) || return 1
    [ "${s%% *}" = 0 ] || return 1
    [ -L "$1" ] && return 0
    m=$(( 0${s#* } ))
    [ $(( m & 022 )) = 0 ] || [ $(( m & 01000 )) != 0 ]
}

# Every prefix of the absolute path $1, from / down to $1 itself, is root_only.
root_chain() {
    root_only / || return 1
    p='' rest=${1#/}
    while [ -n "$rest" ]; do
        c=${rest%%/*}
        case "$rest" in */*) rest=${rest#*/} ;; *) rest='' ;; esac
        [ -n "$c" ] || continue
        p=$p/$c
        root_only "$p" || { log "$p is not owned by root or is writable by others"; return 1; }
    done
}

# A directory no one but root can change, reached through nothing anyone else can change: not
# a symlink itself, and both its path as given and as resolved are root-only all the way down.
safe_dir() {
    case "$1" in /*) ;; *) log "$1 is not an absolute path"; return 1 ;; esac
    if [ -L "$1" ]; then log "$1 is a symlink"; return 1; fi
    [ -d "$1" ] || { log "$1 is not a directory"; return 1; }
    root_chain "$1" || return 1
    r=$(cd -P -- "$1" && pwd -P) || return 1
    root_chain "$r"
}

key() {
    dest=$1 user=$2 group=$3 perms=$4
    dir=$(dirname "$dest")
    # Check what exists before creating anything under it, and the whole path after.
    e=$dir
    while [ ! -e "$e" ] && [ ! -L "$e" ]; do e=$(dirname "$e"); done
    safe_dir "$e" || { log "refusing to write key $dest: $e is not safe"; exit 4; }
    if [ ! -e "$dir" ]; then (umask 022 && mkdir -p "$dir" && chmod 0751 "$dir") || exit 1; fi
    safe_dir "$dir" || { log "refusing to write key $dest: $dir is not safe"; exit 4; }
    if [ -d "$dest" ] && [ ! -L "$dest" ]; then log "refusing to write key $dest: a directory is in the way"; exit 4; fi
    umask 077
    tmp=$(mktemp "$dir/.ferry-key.XXXXXXXXXX") || exit 1
    # Owner and mode first (on the new file, which no one else can replace), then the content.
    if chown "$user:$group" "$tmp" && chmod "$perms" "$tmp" && cat > "$tmp"; then
        # A symlink at DEST is replaced, never followed: removed first (busybox's mv looks
        # through it), and -T never takes DEST as a directory to move into, so a link that
        # reappears in between is refused (busybox) or replaced (coreutils).
        if [ -L "$dest" ]; then rm -f "$dest" || { rm -f "$tmp"; exit 1; }; fi
        mv -f -T "$tmp" "$dest" || { rm -f "$tmp"; exit 1; }
    else
        rm -f "$tmp"
        exit 1
    fi
}

rmkey() {
    for k in "$@"; do
        safe_dir "$(dirname "$k")" || { log "refusing to remove key $k: its directory is not safe"; exit 4; }
    done
    rm -f "$@"
}

mode=$1; shift
(umask 077 && mkdir -p "$state") || exit 5
if [ -L "$state" ] || ! root_only "$state"; then log "$state is a symlink or not root's alone"; exit 5; fi
case "$mode" in
    probe) probe "$@" ;;
    activate) activate "$@" ;;
    watchdog) watchdog "$@" ;;
    rollback) rollback "$@" ;;
    key) key "$@" ;;
    rmkey) rmkey "$@" ;;
    generations) nix-env -p "$1" --list-generations ;;
    switch-generation)
        profile=$1 gen=$2
        if [ -n "$gen" ]; then nix-env -p "$profile" --switch-generation "$gen" >&2 || exit 1
        else nix-env -p "$profile" --rollback >&2 || exit 1; fi
        "$(readlink -f "$profile")/bin/switch-to-configuration" switch >&2 || exit 2
        echo "link=$(readlink "$profile")" ;;
    gc)
        nix-env -p "$1" --delete-generations "+$2" >&2 || exit 1
        nix-store --gc 2>&1 | tail -n 3 ;;
    *) log "unknown mode $mode"; exit 2 ;;
esac
