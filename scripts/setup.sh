#!/usr/bin/env bash
# Installs what ferry needs on a Debian bookworm machine (idempotent): Nix, OpenSSH (client for
# ferry, server for the local test hosts), busybox (test systems), build tools,
# supervisor, s6, systemd and podman (processes), sudo and doas (become).
set -euo pipefail
need=()
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v cc >/dev/null || need+=(build-essential)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v flock >/dev/null || need+=(util-linux)
command -v busybox >/dev/null || need+=(busybox-static)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v nsenter >/dev/null || need+=(util-linux)
# nspawn.container: systemd-nspawn, ip (veth, network namespaces), nft (port forwards)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
# processes.set: real process managers (supervisord, s6), systemd-analyze for unit checks,
# podman for processes.image
command -v supervisord >/dev/null || need+=(supervisor)
command -v s6-svscan >/dev/null || need+=(s6)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v podman >/dev/null || need+=(podman)
# host escalation (`become`): sudo and OpenBSD's doas on test hosts (run0 needs systemd >= 256,
# which bookworm does not have)
command -v sudo >/dev/null || need+=(sudo)
command -v doas >/dev/null || need+=(opendoas)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo (Rust) is required: install it with rustup" >&2
  exit 1
fi
