#!/usr/bin/env bash
# The manual workflow for one host, as a person would script it with plain OpenSSH (no
# ControlMaster: each command is a new connection) and default ciphers:
#   nix-copy-closure --to root@HOST SYSTEM
#   ssh root@HOST nix-env -p /nix/var/nix/profiles/system --set SYSTEM
#   ssh root@HOST SYSTEM/bin/switch-to-configuration switch
# Usage: manual-deploy.sh NAME ADDR PORT KEY SYSTEM (a line of targets.tsv; machines.sh runs it
# host by host and with xargs -P). Environment: KNOWN_HOSTS (pinned host keys), LOG_DIR.
set -euo pipefail
name=$1 addr=$2 port=$3 key=$4 system=$5
opts=(-F /dev/null -i "$key" -p "$port" -o IdentitiesOnly=yes -o "UserKnownHostsFile=$KNOWN_HOSTS"
    -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)
log="$LOG_DIR/manual-$name.log"
{
    NIX_SSHOPTS="${opts[*]}" nix-copy-closure --to "root@$addr" "$system"
    ssh "${opts[@]}" "root@$addr" nix-env -p /nix/var/nix/profiles/system --set "$system"
    ssh "${opts[@]}" "root@$addr" "$system/bin/switch-to-configuration" switch
} >"$log" 2>&1 || { echo "manual deploy to $name failed:" >&2; cat "$log" >&2; exit 1; }
