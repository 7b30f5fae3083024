package doctor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/sshconfig"
)

// Client is what the client rules look at.
type Client struct {
	Host     string
	Settings sshconfig.Settings // ssh -G HOST
	// StandbyAfter is connwatch tunnel's --standby-after, for a Host with
	// forwards (0: not explained).
	StandbyAfter time.Duration
}

// Recommended client keepalive: a dead link is noticed after 45 s.
const (
	RecommendedServerAlive      = 15 * time.Second
	RecommendedServerAliveCount = 3
	// slowDeadLink is how long noticing a dead link may take before it
	// is a warning.
	slowDeadLink = 5 * time.Minute
)

// Keepalive traffic. One ServerAlive round trip is, with the default
// cipher chacha20-poly1305 (16-byte tag, 8-byte padding blocks, length
// not counted in the padding):
//
//   - the request, SSH_MSG_GLOBAL_REQUEST "keepalive@openssh.com" with
//     want-reply: payload 27 B, packet 4 + 1 + 27 + 4 padding + 16 tag =
//     52 B;
//   - the reply, SSH_MSG_REQUEST_FAILURE: payload 1 B, packet 4 + 1 + 1 +
//     6 padding + 16 tag = 28 B;
//   - three TCP segments (request, reply carrying the ACK of the request,
//     and the client's pure ACK of the reply), each with an IPv4 header
//     (20 B) and a TCP header with the timestamp option Linux uses (32 B).
//
// That is 52 + 28 + 3 x 52 = 236 B counted at the IP layer, which is
// what cloud providers meter. On Ethernet each frame adds 14 B header and
// 4 B FCS, and 20 B of preamble and inter-frame gap: 350 B on the wire.
// Server keepalives (ClientAliveInterval) cost the same again per
// interval; ssh sends its keepalive only when nothing else was received
// during the interval, so this is the cost of an idle connection.
const (
	KeepaliveRoundTripBytes     = 52 + 28 + 3*(20+32)
	KeepaliveRoundTripWireBytes = KeepaliveRoundTripBytes + 3*(14+4+20)
)

// KeepaliveBytesPerDay is the IP-layer traffic of one idle connection's
// keepalives a day at interval (0 for no keepalive).
func KeepaliveBytesPerDay(interval time.Duration) int64 {
	if interval <= 0 {
		return 0
	}
	return int64(24*time.Hour/interval) * KeepaliveRoundTripBytes
}

// HumanBytes writes a byte count with SI units: "680 kB", "1.0 MB".
func HumanBytes(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.0f kB", float64(n)/1000)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1f GB", float64(n)/1e9)
}

// CheckClient returns the findings for ssh's settings for one host and
// the settings --fix would write for it.
func CheckClient(in Client) ([]Finding, []Setting) {
	var fs []Finding
	var fix []Setting
	s := in.Settings
	iv, ivErr := sshconfig.ParseTime(s.Get("serveraliveinterval"))
	count, cErr := strconv.Atoi(s.Get("serveralivecountmax"))
	tcpKA := sshconfig.ParseYes(s.Get("tcpkeepalive"))
	value := s.Get("serveraliveinterval") + " x " + s.Get("serveralivecountmax")
	rec := fmt.Sprintf("ServerAliveInterval %d and ServerAliveCountMax %d for Host %s (a dead link is noticed after %s, costing %s a day)",
		int(RecommendedServerAlive.Seconds()), RecommendedServerAliveCount, in.Host,
		Human(RecommendedServerAlive*RecommendedServerAliveCount), HumanBytes(KeepaliveBytesPerDay(RecommendedServerAlive)))
	recFix := []Setting{{"ServerAliveInterval", strconv.Itoa(int(RecommendedServerAlive.Seconds()))}, {"ServerAliveCountMax", strconv.Itoa(RecommendedServerAliveCount)}}
	switch {
	case ivErr != nil || cErr != nil:
		fs = append(fs, Finding{ID: IDServerAliveOff, Severity: Error, Setting: "ServerAliveInterval", Value: value,
			Message: "the ServerAlive settings cannot be read", Fix: "set " + rec})
	case (iv == 0 || count == 0) && tcpKA:
		fs = append(fs, Finding{ID: IDTCPKeepAliveOnly, Severity: Warning, Setting: "ServerAliveInterval", Value: value + ", TCPKeepAlive yes",
			Message: "only TCP keepalive watches the link: a dead link is noticed after about 2 h 11 min (Linux defaults), and a NAT or firewall may drop the idle connection long before",
			Fix:     "set " + rec})
		fix = append(fix, recFix...)
	case iv == 0 || count == 0:
		fs = append(fs, Finding{ID: IDServerAliveOff, Severity: Warning, Setting: "ServerAliveInterval", Value: value + ", TCPKeepAlive no",
			Message: "nothing watches the link: ssh never notices that the server or the network went away, and idle connections are dropped by NATs and firewalls",
			Fix:     "set " + rec})
		fix = append(fix, recFix...)
	default:
		dead := iv * time.Duration(count)
		if dead > slowDeadLink {
			fs = append(fs, Finding{ID: IDServerAliveSlow, Severity: Warning, Setting: "ServerAliveInterval", Value: value,
				Message: fmt.Sprintf("a dead link is noticed only after %s (ServerAliveInterval x ServerAliveCountMax)", Human(dead)),
				Fix:     "set " + rec})
			fix = append(fix, recFix...)
		} else {
			fs = append(fs, Finding{ID: IDServerAlive, Severity: Info, Setting: "ServerAliveInterval", Value: value,
				Message: fmt.Sprintf("a dead link is noticed after %s", Human(dead))})
		}
		fs = append(fs, Finding{ID: IDKeepaliveTraffic, Severity: Info, Setting: "ServerAliveInterval", Value: s.Get("serveraliveinterval"),
			Message: fmt.Sprintf("keepalives every %s cost about %s a day on an idle connection (%d B per round trip at the IP layer; %s with Ethernet framing)",
				Human(iv), HumanBytes(KeepaliveBytesPerDay(iv)), KeepaliveRoundTripBytes, HumanBytes(int64(24*time.Hour/iv)*KeepaliveRoundTripWireBytes))})
	}

	var fwds []string
	for _, k := range []string{"localforward", "remoteforward", "dynamicforward"} {
		for _, v := range s.All(k) {
			fwds = append(fwds, k+" "+v)
		}
	}
	if sa := in.StandbyAfter; len(fwds) > 0 && sa > 0 && ivErr == nil && cErr == nil && iv > 0 && count > 0 {
		fs = append(fs, Finding{ID: IDTunnelStandby, Severity: Info, Setting: "ServerAliveInterval", Value: value,
			Message: fmt.Sprintf("under connwatch tunnel a connection whose keepalive reply is %s late gets a standby, which takes over if it answers first: a connection whose flow a NAT or firewall forgot is replaced after at most %s (a keepalive's turn and its lateness), while ServerAliveInterval x ServerAliveCountMax (%s) still bounds how long a dead connection, and what it carries, is kept",
				Human(min(sa, iv)), Human(iv+min(sa, iv)), Human(iv*time.Duration(count)))})
	}
	if len(fwds) > 0 && !sshconfig.ParseYes(s.Get("exitonforwardfailure")) {
		fs = append(fs, Finding{ID: IDExitOnForwardFailure, Severity: Warning, Setting: "ExitOnForwardFailure", Value: s.Get("exitonforwardfailure"),
			Message: fmt.Sprintf("ssh keeps running when a forward cannot be set up (port in use, refused by the server), so a tunnel supervisor never learns it failed; forwards: %s", strings.Join(fwds, "; ")),
			Fix:     "set ExitOnForwardFailure yes for Host " + in.Host})
		fix = append(fix, Setting{"ExitOnForwardFailure", "yes"})
	}
	return fs, dedupe(fix)
}
