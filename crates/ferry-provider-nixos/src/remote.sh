# ferry's helper on a NixOS host (POSIX sh). Uploaded to /run/ferry/ by the nixos provider and
# run as root (through sudo when logging in as another user). One entry point per mode:
#
#   probe PROFILE [KEYFILE...]          facts about the host, as key=value lines
#   activate SYSTEM PROFILE GOAL MAGIC ONFAIL TOKEN
#                                       set the profile, switch-to-configuration GOAL; on failure
#                                       roll back (ONFAIL=1); with MAGIC>0 seconds leave a canary
#                                       and a watchdog that rolls back unless the canary is removed
#   rollback PROFILE GOAL PREV_CURRENT PREV_LINK NEW_LINK
#   key DEST USER GROUP PERMS           content on stdin, written atomically (tmp, chown, chmod, mv)
#   rmkey PATH...
#   generations PROFILE
#   switch-generation PROFILE GEN       (GEN empty: the previous one) then activate it
#   gc PROFILE KEEP
#
# Exit codes of activate: 0 ok, 10 cannot set the profile, 20 activation failed and was rolled
# back, 21 activation failed and the rollback failed too, 22 activation failed (no rollback).
set -u
state=/run/ferry
self=$0

log() { echo "ferry: $*" >&2; }

# The store path a link resolves to, or nothing if it does not exist (`readlink -f` alone
# prints the path of a missing link).
target() { [ -e "$1" ] && readlink -f "$1" || true; }

gen_of() { # system-12-link -> 12
    l=$(basename "$1"); l=${l%-link}; echo "${l##*-}"
}

probe() {
    profile=$1; shift
    echo "current=$(target /run/current-system)"
    echo "profile=$(target "$profile")"
    echo "link=$(readlink "$profile" 2>/dev/null || true)"
    echo "boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)"
    for k in "$@"; do
        if [ -f "$k" ]; then
            echo "key=$k $(stat -c '%a %U %G' "$k" 2>/dev/null)"
        else
            echo "key=$k missing"
        fi
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
        mkdir -p "$(dirname "$profile")"
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
        : > "$state/canary-$token"
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

key() {
    dest=$1 user=$2 group=$3 perms=$4
    dir=$(dirname "$dest")
    [ -d "$dir" ] || mkdir -p -m 0751 "$dir"
    umask 077
    tmp="$dest.ferry-tmp"
    cat > "$tmp" || { rm -f "$tmp"; exit 1; }
    chown "$user:$group" "$tmp" && chmod "$perms" "$tmp" && mv -f "$tmp" "$dest" || { rm -f "$tmp"; exit 1; }
}

mode=$1; shift
mkdir -p -m 0700 "$state"
case "$mode" in
    probe) probe "$@" ;;
    activate) activate "$@" ;;
    watchdog) watchdog "$@" ;;
    rollback) rollback "$@" ;;
    key) key "$@" ;;
    rmkey) rm -f "$@" ;;
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
