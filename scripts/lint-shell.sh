#!/usr/bin/env bash
# Checks the helper scripts ferry runs on hosts: POSIX syntax (`sh -n`) and shellcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
helpers=(
  crates/ferry-provider-nixos/src/remote.sh
  crates/ferry-provider-nspawn/src/nspawn.sh
  crates/ferry-provider-processes/src/sh/*.sh
)
for f in "${helpers[@]}"; do
  sh -n "$f"
  if command -v dash >/dev/null; then dash -n "$f"; fi
done
shellcheck "${helpers[@]}"
echo "host helpers: sh -n and shellcheck clean (${#helpers[@]} files)"
