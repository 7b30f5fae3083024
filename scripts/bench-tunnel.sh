#!/usr/bin/env bash
# Measures `connwatch tunnel` against autossh+ssh (when autossh is
# installed) in a lab of two network namespaces it makes: a client and a
# server joined by a veth pair, a real OpenSSH sshd in the server, and a
# data server (echo, sink, source) behind each end of the forwards. Per
# tool it measures
#   - throughput of SIZE through a LocalForward and a RemoteForward, up
#     (client to server) and down, median of 3, in MB/s;
#   - for each outage length: the link is cut silently (nftables drop in
#     the server namespace, both ways), the time until the client drops
#     its dead SSH connection ("notice"), and, once the rule is gone, the
#     time until a probe through the LocalForward (one every 100 ms from
#     the cut on) gets its echo ("recover");
#   - with --flow-drop: only the SSH connection's own flow is dropped
#     (nftables on its client port, both ways, in the server namespace:
#     what a NAT or stateful firewall that forgot the flow does, while
#     new connections get through), and the time until a new connection
#     through the LocalForward (one every 100 ms from the drop on) gets
#     its echo ("flow");
#   - the CPU time the tool's processes used for the transfers, in
#     seconds a GiB moved ("cpu/GiB", user and system);
#   - the peak RSS of the tool's process tree (sum of VmHWM of the live
#     processes, sampled every 50 ms: start-up included), and once the
#     forwards answer, the most the tree held resident ("steady": VmRSS)
#     and of that the most that was anonymous (heap, stacks) and
#     file-backed (executable and libraries) at one time.
# connwatch is built as scripts/release.sh builds it: static, stripped.
# The namespaces and every process in them are removed on exit, however
# the script ends. Needs root, ip, nft, sshd, ssh, go.
#
# Usage: scripts/bench-tunnel.sh [--outage S[,S...]] [--size MiB]
#          [--tools connwatch,autossh] [--interval S] [--count-max N]
#          [--connect-timeout S] [--no-throughput] [--flow-drop]
#          [--binary PATH]
#   --outage 20,120,600   outage lengths in seconds (default 120; '' for none)
#   --size 256            MiB per transfer (default 256)
#   --interval/--count-max  ServerAliveInterval/CountMax (default 5 and 2)
#   --connect-timeout S   ConnectTimeout in ssh_config (default: unset)
#   --flow-drop           also measure recovery from a dropped flow
#   --binary PATH         connwatch binary to measure (default: built from
#                         this tree)
#   --logs DIR            keep the tools' and sshd's logs in DIR
set -euo pipefail
cd "$(dirname "$0")/.."

outages=120 size=256 tools=connwatch,autossh interval=5 countmax=2
connect_timeout= throughput=1 flowdrop=0 binary= logs=
while [ $# -gt 0 ]; do
  case $1 in
    --outage) outages=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --count-max) countmax=$2; shift 2 ;;
    --connect-timeout) connect_timeout=$2; shift 2 ;;
    --no-throughput) throughput=0; shift ;;
    --flow-drop) flowdrop=1; shift ;;
    --binary) binary=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-tunnel: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-tunnel: needs root (network namespaces)" >&2; exit 1; }
for b in ip nft /usr/sbin/sshd ssh ssh-keygen go; do
  command -v "$b" >/dev/null || { echo "bench-tunnel: $b not found (scripts/install-test-deps.sh)" >&2; exit 1; }
done

id=$$
cns=cwbench-$id-c sns=cwbench-$id-s
cif=cwbc$id sif=cwbs$id
dir=$(mktemp -d /tmp/bench-tunnel.XXXXXX)
chmod 755 "$dir"
cleanup() {
  set +e
  exec 2>/dev/null # no word about the jobs killed below
  for ns in $cns $sns; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  sleep 0.2
  ip netns del "$cns" 2>/dev/null
  ip netns del "$sns" 2>/dev/null
  [ -z "$logs" ] || { mkdir -p "$logs"; cp "$dir"/*.log "$logs"/; }
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A /30 of 10.232.0.0/16 no interface here is on.
for _ in $(seq 50); do
  net=10.232.$((RANDOM % 256)).$((RANDOM % 64 * 4))
  ip -4 addr | grep -q "inet ${net%.*}\." || break
done
caddr=${net%.*}.$((${net##*.} + 1)) saddr=${net%.*}.$((${net##*.} + 2))

echo "building..." >&2
[ -n "$binary" ] || { CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/connwatch" ./cmd/connwatch; binary=$dir/connwatch; }
go build -o "$dir/tunnelbench" ./scripts/tunnelbench
tb=$dir/tunnelbench

ip netns add "$cns"
ip netns add "$sns"
ip link add "$cif" netns "$cns" type veth peer name "$sif" netns "$sns"
ip -n "$cns" addr add "$caddr/30" dev "$cif"
ip -n "$sns" addr add "$saddr/30" dev "$sif"
for ns in $cns $sns; do ip -n "$ns" link set lo up; done
ip -n "$cns" link set "$cif" up
ip -n "$sns" link set "$sif" up
inc() { ip netns exec "$cns" "$@"; }
ins() { ip netns exec "$sns" "$@"; }

# sshd in the server namespace, a key for root, known_hosts for the client.
ssh-keygen -q -t ed25519 -N '' -C cwbench -f "$dir/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C cwbench -f "$dir/client_ed25519"
cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
echo "$saddr $(cat "$dir/host_ed25519.pub")" >"$dir/known_hosts"
mkdir -p /run/sshd
cat >"$dir/sshd_config" <<EOF
ListenAddress $saddr
Port 22
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
ClientAliveInterval 5
ClientAliveCountMax 2
LogLevel VERBOSE
EOF
ins /usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log" &
ins "$tb" serve 127.0.0.1:17000 &
inc "$tb" serve 127.0.0.1:17000 &
disown -a # killed with the namespaces, without a word

cat >"$dir/ssh_config" <<EOF
Host bench
  HostName $saddr
  User root
  IdentityFile $dir/client_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ServerAliveInterval $interval
  ServerAliveCountMax $countmax
  ExitOnForwardFailure yes
  LocalForward 127.0.0.1:17001 127.0.0.1:17000
  RemoteForward 127.0.0.1:17002 127.0.0.1:17000
${connect_timeout:+  ConnectTimeout $connect_timeout}
EOF

cat >"$dir/cut.nft" <<EOF
table inet cwbench {
  chain in { type filter hook input priority -300; policy accept; iifname "$sif" drop; }
  chain out { type filter hook output priority -300; policy accept; oifname "$sif" drop; }
}
EOF
cut="ip netns exec $sns nft -f $dir/cut.nft"
# {ports} is filled in by tunnelbench flowdrop.
drop="printf '%s\\n' 'table inet cwbench {' \
  '  chain in { type filter hook input priority -300; policy accept; tcp sport { {ports} } drop; }' \
  '  chain out { type filter hook output priority -300; policy accept; tcp dport { {ports} } drop; }' '}' \
  | ip netns exec $sns nft -f -"
restore="ip netns exec $sns nft delete table inet cwbench"

# waitfor CMD...: until CMD succeeds, at most 30 s.
waitfor() {
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench-tunnel: timed out waiting for: $*" >&2
  return 1
}

# treecpu PID: user+system clock ticks of PID and its children (autossh's
# ssh) so far.
treecpu() {
  local p t=0 f
  for p in "$1" $(pgrep -P "$1"); do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) } # the fields after the command name
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

# median of three numbers
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

results=()
bench() { # tool
  local tool=$1 pid rsspid row
  case $tool in
    # Not through inc: a backgrounded function is a subshell, and $! must
    # be the tool itself (ip netns exec execs it) to measure and stop it.
    connwatch) ip netns exec "$cns" "$binary" tunnel -F "$dir/ssh_config" --state-dir "$dir/state" bench 2>"$dir/$tool.log" & ;;
    autossh) AUTOSSH_GATETIME=0 ip netns exec "$cns" autossh -M 0 -N -F "$dir/ssh_config" bench 2>"$dir/$tool.log" & ;;
  esac
  pid=$!
  waitfor inc "$tb" ping 127.0.0.1:17001
  waitfor ins "$tb" ping 127.0.0.1:17002
  "$tb" rss "$pid" >"$dir/$tool.rss" &
  rsspid=$!
  local lu=- ld=- ru=- rd=- cpu=- bytes=$((size << 20))
  if [ "$throughput" = 1 ]; then
    xf() { local a b c; a=$("$@"); b=$("$@"); c=$("$@"); median "$a" "$b" "$c"; }
    local t0; t0=$(treecpu "$pid")
    lu=$(xf inc "$tb" xfer 127.0.0.1:17001 up $bytes)
    ld=$(xf inc "$tb" xfer 127.0.0.1:17001 down $bytes)
    ru=$(xf ins "$tb" xfer 127.0.0.1:17002 down $bytes)
    rd=$(xf ins "$tb" xfer 127.0.0.1:17002 up $bytes)
    # 12 transfers of size MiB each
    cpu=$(awk -v a="$t0" -v b="$(treecpu "$pid")" -v hz="$(getconf CLK_TCK)" -v mib="$size" \
      'BEGIN{printf "%.2f", (b-a)/hz/(12*mib/1024)}')
  fi
  local flow=-
  if [ "$flowdrop" = 1 ]; then
    sleep 2
    waitfor inc "$tb" ping 127.0.0.1:17001
    echo "$tool: flow drop..." >&2
    flow=$(inc "$tb" flowdrop 127.0.0.1:17001 "$saddr:22" "$drop" "$restore")
    flow=${flow#flow=}
  fi
  local o out first=1
  for o in ${outages//,/ }; do
    sleep 2
    waitfor inc "$tb" ping 127.0.0.1:17001
    echo "$tool: ${o}s outage..." >&2
    out=$(inc "$tb" outage 127.0.0.1:17001 "$saddr:22" "${o}s" "$cut" "$restore")
    local notice=${out#notice=}; notice=${notice%% *}
    local rec=${out##*recover=}
    if [ $first = 1 ]; then
      row=$(printf '%-10s %6s %8s %8s %6s %8s %8s %8s %8s %7s' "$tool" "$o" "$notice" "$rec" "$flow" "$lu" "$ld" "$ru" "$rd" "$cpu")
      first=0
    else
      row=$(printf '%-10s %6s %8s %8s %6s %8s %8s %8s %8s %7s' "" "$o" "$notice" "$rec" "" "" "" "" "" "")
    fi
    results+=("$row RSSPLACEHOLDER")
  done
  if [ $first = 1 ]; then # no outage asked for: the throughput and RSS alone
    row=$(printf '%-10s %6s %8s %8s %6s %8s %8s %8s %8s %7s' "$tool" - - - "$flow" "$lu" "$ld" "$ru" "$rd" "$cpu")
    results+=("$row RSSPLACEHOLDER")
  fi
  kill "$rsspid" 2>/dev/null; wait "$rsspid" 2>/dev/null || true
  local peak; peak=$(awk '{printf "%8.1f %6.1f %6.1f %6.1f", $1/1024, $2/1024, $3/1024, $4/1024}' "$dir/$tool.rss")
  results=("${results[@]/RSSPLACEHOLDER/$peak}")
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  # The next tool needs the forward's port: wait until it is free.
  for _ in $(seq 100); do inc "$tb" ping 127.0.0.1:17001 0.2s >/dev/null 2>&1 || break; sleep 0.1; done
  if inc "$tb" ping 127.0.0.1:17001 0.2s >/dev/null 2>&1; then
    echo "bench-tunnel: $tool's forward still answers after it was stopped" >&2
    exit 1
  fi
  sleep 1
}

for tool in ${tools//,/ }; do
  if [ "$tool" = autossh ] && ! command -v autossh >/dev/null; then
    echo "bench-tunnel: autossh not installed (apt-get install autossh); skipping it" >&2
    continue
  fi
  bench "$tool"
done

echo
echo "ServerAliveInterval $interval, ServerAliveCountMax $countmax, ConnectTimeout ${connect_timeout:-unset}; ${size} MiB transfers (MB/s, median of 3); times in s"
printf '%-10s %6s %8s %8s %6s %8s %8s %8s %8s %7s %8s %6s %6s %6s\n' tool outage notice recover flow L-up L-down R-up R-down cpu/GiB RSS-MB steady anon file
printf '%s\n' "${results[@]}"
