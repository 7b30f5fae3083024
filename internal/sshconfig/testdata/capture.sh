#!/bin/sh
# Captures the real sshd -T / ssh -G output the parser tests read.
# Run as root on the machine whose OpenSSH you want to record (these were
# taken on Debian 12, OpenSSH_9.2p1 Debian-2+deb12u10):
#   cd internal/sshconfig/testdata && sh capture.sh
set -eu
v=$(ssh -V 2>&1 | sed 's/^OpenSSH_\([0-9.]*\).*/\1/')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ssh-keygen -q -t ed25519 -N '' -f "$tmp/hostkey"

# sshd's defaults: the distribution's /etc/ssh/sshd_config.
/usr/sbin/sshd -T > "sshd-T-$v-debian.txt"

# The classic "60 x 120" recipe, plus a Match block evaluated for alice.
cat > "$tmp/recipe.conf" <<CONF
HostKey $tmp/hostkey
ClientAliveInterval 60
ClientAliveCountMax 120
LoginGraceTime 0
LogLevel ERROR
UsePAM no
Match User alice
	ClientAliveInterval 10
CONF
/usr/sbin/sshd -T -f "$tmp/recipe.conf" | sed "s#$tmp#/tmp/capture#" > "sshd-T-$v-recipe.txt"
/usr/sbin/sshd -T -f "$tmp/recipe.conf" -C user=alice,host=laptop,addr=203.0.113.5 | sed "s#$tmp#/tmp/capture#" > "sshd-T-$v-recipe-alice.txt"

# ssh -G without any config, and a host with forwards.
ssh -G -F /dev/null example.com > "ssh-G-$v-default.txt"
cat > "$tmp/ssh_config" <<CONF
Host tunnel
	HostName 192.0.2.10
	User bob
	LocalForward 8080 localhost:80
	LocalForward 8443 localhost:443
	RemoteForward 2222 localhost:22
	DynamicForward 1080
	ServerAliveInterval 30
	IdentityFile ~/.ssh/tunnel_ed25519
	IdentityFile ~/.ssh/id_ed25519
CONF
ssh -G -F "$tmp/ssh_config" tunnel > "ssh-G-$v-tunnel.txt"
