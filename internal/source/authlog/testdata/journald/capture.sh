#!/bin/sh
# capture.sh records what a real sshd (OpenSSH 9.2, Debian 12) logs through
# syslog into a real systemd-journald (252), as journalctl renders it:
# -o json (what Journal reads), -o short (the classic auth.log shape) and
# -o short-iso-precise. Run as root on a machine without journald:
#
#   unshare -m --propagation private sh testdata/journald/capture.sh OUTDIR
#
# Everything it mounts (tmpfs over /run/systemd, /run/log, /var/log/journal
# and /dev, with the needed device nodes bound back) lives in the private
# mount namespace of unshare and disappears with it. The login user cwtest
# must exist (internal/testkit/sshdtest creates it). Run it with
# AUTHLOG_JOURNAL_TEST=/path/to/authlog.test as well to run the Journal
# integration test against the live journal afterwards.
set -eu
out=$(realpath "$1")
w=$(mktemp -d)
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/journal
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
mkdir "$w/olddev"
mount --rbind /dev "$w/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom tty ptmx; do
	touch "/dev/$n"
	mount --bind "$w/olddev/$n" "/dev/$n"
done
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
umount /dev/ptmx; rm /dev/ptmx; ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd
ln -s /run/systemd/journal/dev-log /dev/log

jpid= spid=
cleanup() {
	for p in $spid $jpid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
/lib/systemd/systemd-journald &
jpid=$!
i=0
while [ ! -S /run/systemd/journal/dev-log ]; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "journald did not start" >&2; exit 1; }
	sleep 0.05
done

ssh-keygen -q -t ed25519 -N '' -C capture-host -f "$w/host"
ssh-keygen -q -t ed25519 -N '' -C capture-client -f "$w/client"
mkdir "$w/ak"; cp "$w/client.pub" "$w/ak/cwtest"
chmod 755 "$w" "$w/ak"; chmod 644 "$w/ak/cwtest"
printf '#!/bin/sh\nexec sleep 300\n' > "$w/park.sh"
printf '#!/bin/sh\necho wrong-password\n' > "$w/wrong.sh"
chmod 755 "$w/park.sh" "$w/wrong.sh"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$w/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $w/host
PidFile $w/sshd.pid
AuthorizedKeysFile $w/ak/%u
StrictModes no
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
SyslogFacility AUTH
MaxStartups 100
LoginGraceTime 0
ClientAliveInterval 1
ClientAliveCountMax 2
CFG
/usr/sbin/sshd -D -f "$w/sshd_config" &
spid=$!
i=0
while ! grep -q "Server listening" "$w/j" 2>/dev/null; do
	journalctl -q -o cat SYSLOG_IDENTIFIER=sshd > "$w/j" || true
	i=$((i + 1)); [ $i -lt 100 ] || { echo "sshd did not start" >&2; exit 1; }
	sleep 0.05
done

sshc="ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p $port"
key="-o BatchMode=yes -i $w/client -o IdentitiesOnly=yes"
pw="-o PubkeyAuthentication=no -o PreferredAuthentications=password"
# Key logins: a command without and with a tty, a forward killed, sftp.
$sshc $key cwtest@127.0.0.1 true
$sshc $key -tt cwtest@127.0.0.1 true < /dev/null
setsid $sshc $key -N cwtest@127.0.0.1 < /dev/null & fpid=$!
sleep 1; kill -9 $fpid
echo pwd | sftp -b - -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
	-o LogLevel=ERROR -o BatchMode=yes -i "$w/client" -o IdentitiesOnly=yes -P $port cwtest@127.0.0.1 > /dev/null
# A forward whose client stops answering: ClientAlive drops it.
setsid $sshc $key -N cwtest@127.0.0.1 < /dev/null & fpid=$!
sleep 1; kill -STOP $fpid; sleep 4; kill -9 $fpid
# Password prompts that never answer, killed after a second.
for u in root cwtest nosuchuser; do
	SSH_ASKPASS=$w/park.sh SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid $sshc $pw $u@127.0.0.1 true < /dev/null & ppid=$!
	sleep 1; kill -9 $ppid; pkill -P $ppid 2>/dev/null || true
done
# Wrong passwords.
for u in cwtest nosuchuser; do
	SSH_ASKPASS=$w/wrong.sh SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid $sshc $pw -o NumberOfPasswordPrompts=2 $u@127.0.0.1 true < /dev/null || true
done
sleep 1

if [ -n "${AUTHLOG_JOURNAL_TEST:-}" ]; then
	AUTHLOG_JOURNAL=1 "$AUTHLOG_JOURNAL_TEST" -test.run 'TestJournalLive' -test.v || echo "journal test failed" >&2
fi

match="SYSLOG_IDENTIFIER=sshd SYSLOG_IDENTIFIER=sshd-session"
journalctl -o json $match > "$out/sshd-252.json"
journalctl -o short $match > "$out/sshd-252.short"
journalctl -o short-iso-precise $match > "$out/sshd-252.short-iso-precise"
