#!/usr/bin/env bash
# Records the sshd part of this machine's /proc as a procfs-shaped tree
# that `connwatch status --proc DIR` and tests can read: stat, cmdline,
# the Name/State/Uid/Gid lines of status, task/PID/children (the
# children's PIDs, of which only sshd's are recorded) and the exe link of every sshd
# and sftp-server process, their socket fd links, net/tcp, net/tcp6 and
# the boot time; and host-files, the stat of the executables the exe
# links name and of their directories ("MODE UID PATH", MODE in octal
# with the type bits), which the scanner checks to believe a title. Run
# as root while the sessions to record are open.
# Usage: scripts/record-proc.sh OUTDIR
set -euo pipefail
out=${1:?usage: record-proc.sh OUTDIR}
mkdir -p "$out/net"
files="$out/host-files"
: >"$files"
: >"$files.seen"
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  comm=$(cat "$d/comm" 2>/dev/null) || continue
  case "$comm" in sshd*|sftp-server) ;; *) continue ;; esac
  mkdir -p "$out/$pid/fd"
  cat "$d/stat" >"$out/$pid/stat" 2>/dev/null || true
  cat "$d/cmdline" >"$out/$pid/cmdline" 2>/dev/null || true
  grep -E '^(Name|State|Uid|Gid):' "$d/status" >"$out/$pid/status" 2>/dev/null || true
  mkdir -p "$out/$pid/task/$pid"
  cat "$d/task/$pid/children" >"$out/$pid/task/$pid/children" 2>/dev/null || true
  if exe=$(readlink "$d/exe" 2>/dev/null); then
    ln -sfn "$exe" "$out/$pid/exe"
    if ! grep -qxF -- "$exe" "$files.seen" 2>/dev/null; then
      echo "$exe" >>"$files.seen"
      # stat through the link: the running file, even a deleted one.
      read -r mode uid < <(stat -L -c '%f %u' "$d/exe") || continue
      printf '%o %s %s\n' "0x$mode" "$uid" "$exe" >>"$files"
      dir=$(dirname -- "${exe% (deleted)}")
      if ! grep -qxF -- "$dir" "$files.seen"; then
        echo "$dir" >>"$files.seen"
        read -r mode uid < <(stat -c '%f %u' -- "$dir") || continue
        printf '%o %s %s\n' "0x$mode" "$uid" "$dir" >>"$files"
      fi
    fi
  fi
  for fd in "$d"/fd/*; do
    target=$(readlink "$fd" 2>/dev/null) || continue
    case "$target" in socket:*) ln -sfn "$target" "$out/$pid/fd/${fd##*/}" ;; esac
  done
done
cp /proc/net/tcp "$out/net/tcp"
cp /proc/net/tcp6 "$out/net/tcp6" 2>/dev/null || : >"$out/net/tcp6"
grep '^btime ' /proc/stat >"$out/stat"
rm -f "$files.seen"
echo "recorded $(ls -d "$out"/[0-9]* | wc -l) processes in $out"
