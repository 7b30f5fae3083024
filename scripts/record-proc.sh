#!/usr/bin/env bash
# Records the sshd part of this machine's /proc as a procfs-shaped tree
# that `connwatch status --proc DIR` and tests can read: stat and cmdline
# of every sshd and sftp-server process, their socket fd links, net/tcp,
# net/tcp6 and the boot time. Run as root while the sessions to record are
# open. Usage: scripts/record-proc.sh OUTDIR
set -euo pipefail
out=${1:?usage: record-proc.sh OUTDIR}
mkdir -p "$out/net"
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  comm=$(cat "$d/comm" 2>/dev/null) || continue
  case "$comm" in sshd*|sftp-server) ;; *) continue ;; esac
  mkdir -p "$out/$pid/fd"
  cat "$d/stat" >"$out/$pid/stat" 2>/dev/null || true
  cat "$d/cmdline" >"$out/$pid/cmdline" 2>/dev/null || true
  for fd in "$d"/fd/*; do
    target=$(readlink "$fd" 2>/dev/null) || continue
    case "$target" in socket:*) ln -sfn "$target" "$out/$pid/fd/${fd##*/}" ;; esac
  done
done
cp /proc/net/tcp "$out/net/tcp"
cp /proc/net/tcp6 "$out/net/tcp6" 2>/dev/null || : >"$out/net/tcp6"
grep '^btime ' /proc/stat >"$out/stat"
echo "recorded $(ls -d "$out"/[0-9]* | wc -l) processes in $out"
