#!/usr/bin/env bash
# Installs what connwatch's integration tests run against: a real OpenSSH
# server and client, iproute2 and nftables for network namespaces,
# systemd-analyze and dbus-daemon, and what the release test uses. Needs
# root (apt-get); does nothing for packages already installed.
set -euo pipefail

packages=(openssh-server openssh-client iproute2 nftables procps)
# Prometheus server and promtool, for internal/sink/prometheus.
packages+=(prometheus)
# VPN sources: a real OpenVPN server and client, userspace WireGuard
# (wireguard-go) and wg(8), ping for traffic through the tunnels.
packages+=(openvpn wireguard-go wireguard-tools iputils-ping)
# packaging: systemd-analyze (security, verify) rates the units offline;
# the package installs harmlessly where PID 1 is not systemd (its scripts
# call systemctl only when /run/systemd/system exists). internal/action:
# a private dbus-daemon plays logind and systemd for the poweroff action.
packages+=(systemd dbus-daemon)
# packaging's release test: git (versions), man-db (man -l on the pages)
# and bash-completion (the completion script needs its helpers); it runs
# dpkg, tar, gzip and sha256sum, which every Debian has.
packages+=(git man-db bash-completion)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-test-deps: installed ${missing[*]}"
