package doctor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/sshconfig"
)

// Server is what the server rules look at.
type Server struct {
	// Settings are sshd's effective settings (sshd -T, or the files).
	Settings sshconfig.Settings
	// Version is sshd's version; zero when unknown.
	Version sshconfig.Version
	// IdleWindow is the agent's idle window (idle.idle_after), 0 when no
	// agent config was given.
	IdleWindow time.Duration
	// FallbackReason is set when sshd -T could not run and Settings were
	// read from the files.
	FallbackReason error
	// Unevaluated are Match blocks whose settings are not in Settings
	// (no connection spec, or criteria that cannot be evaluated here).
	Unevaluated []*sshconfig.Block
}

// Setting is one keyword the fix writer sets.
type Setting struct{ Key, Value string }

// Defaults of the recommendation.
const (
	// RecommendedClientAlive x RecommendedClientAliveCount is how long a
	// vanished client keeps its session: 2 min.
	RecommendedClientAlive      = 30 * time.Second
	RecommendedClientAliveCount = 4
	// RecommendedLoginGrace is the LoginGraceTime --fix writes.
	RecommendedLoginGrace = 30 * time.Second
	// deadSessionLimit is how long a dead session may linger when no
	// agent idle window is known.
	deadSessionLimit = time.Hour
	// maxLoginGrace and maxStartupsFull bound pending logins.
	maxLoginGrace   = 2 * time.Minute
	maxStartupsFull = 100
)

// RecommendServerAlive returns the ClientAliveInterval and CountMax to
// use: 30 s x 4 (a vanished client is dropped after 2 min), faster when
// the idle window is so short that 2 min would be more than a quarter of
// it.
func RecommendServerAlive(idle time.Duration) (time.Duration, int) {
	iv, n := RecommendedClientAlive, RecommendedClientAliveCount
	if idle > 0 && iv*time.Duration(n) > idle/4 {
		iv = max((idle / 4 / time.Duration(n)).Truncate(time.Second), 5*time.Second)
	}
	return iv, n
}

// CheckServer returns the findings for an sshd and the settings --fix
// would write to address them (keepalive and login grace only).
func CheckServer(in Server) ([]Finding, []Setting) {
	var fs []Finding
	var fix []Setting
	s := in.Settings
	if in.FallbackReason != nil {
		fs = append(fs, Finding{ID: IDSettingsSource, Severity: Info, Setting: "sshd -T", Value: "failed",
			Message: fmt.Sprintf("sshd -T could not run (%v); the settings below were read from the configuration files", in.FallbackReason),
			Fix:     "run connwatch doctor as root for sshd's own view"})
	}
	if len(in.Unevaluated) > 0 {
		var where []string
		for _, b := range in.Unevaluated {
			where = append(where, b.String())
		}
		fs = append(fs, Finding{ID: IDMatchBlocks, Severity: Info, Setting: "Match", Value: strconv.Itoa(len(in.Unevaluated)),
			Message: "Match blocks may change these settings for some connections; not evaluated: " + strings.Join(where, "; "),
			Fix:     "pass --connection user=NAME,host=HOST,addr=ADDR to see the settings a given connection gets"})
	}

	// Keepalive.
	iv, ivErr := sshconfig.ParseTime(s.Get("clientaliveinterval"))
	count, cErr := strconv.Atoi(s.Get("clientalivecountmax"))
	tcpKA := s.Get("tcpkeepalive")
	recIv, recN := RecommendServerAlive(in.IdleWindow)
	rec := fmt.Sprintf("ClientAliveInterval %d and ClientAliveCountMax %d (a vanished client is dropped after %s)", int(recIv.Seconds()), recN, Human(recIv*time.Duration(recN)))
	recFix := []Setting{{"ClientAliveInterval", strconv.Itoa(int(recIv.Seconds()))}, {"ClientAliveCountMax", strconv.Itoa(recN)}}
	value := s.Get("clientaliveinterval") + " x " + s.Get("clientalivecountmax")
	switch {
	case ivErr != nil || cErr != nil:
		fs = append(fs, Finding{ID: IDClientAliveOff, Severity: Error, Setting: "ClientAliveInterval", Value: value,
			Message: "the ClientAlive settings cannot be read", Fix: "set " + rec})
	case iv == 0 || count == 0:
		why := "ClientAliveInterval is 0"
		if iv > 0 {
			why = "ClientAliveCountMax is 0, which turns off dropping"
		}
		linger := "until TCP keepalive gives up (about 2 h 11 min with Linux defaults)"
		if !sshconfig.ParseYes(tcpKA) {
			linger = "forever (TCPKeepAlive is off too)"
		}
		fs = append(fs, Finding{ID: IDClientAliveOff, Severity: Warning, Setting: "ClientAliveInterval", Value: value,
			Message: fmt.Sprintf("%s: a client that vanishes without closing (laptop lid, lost Wi-Fi) keeps its session and processes %s, and keeps an idle-stopping machine awake that long", why, linger),
			Fix:     "set " + rec})
		fix = append(fix, recFix...)
	default:
		dead := iv * time.Duration(count)
		limit, against := deadSessionLimit, "more than "+Human(deadSessionLimit)
		if in.IdleWindow > 0 {
			limit, against = in.IdleWindow, "longer than the agent's idle window of "+Human(in.IdleWindow)
		}
		if dead > limit {
			fs = append(fs, Finding{ID: IDClientAliveLong, Severity: Warning, Setting: "ClientAliveInterval", Value: value,
				Message: fmt.Sprintf("a client that vanishes is dropped after %s, %s: a dead session keeps an idle-stopping machine awake that long", Human(dead), against),
				Fix:     "set " + rec})
			fix = append(fix, recFix...)
		} else {
			fs = append(fs, Finding{ID: IDClientAlive, Severity: Info, Setting: "ClientAliveInterval", Value: value,
				Message: fmt.Sprintf("a client that vanishes is dropped after %s", Human(dead))})
		}
	}

	// Pending (unauthenticated) connections.
	grace, gErr := sshconfig.ParseTime(s.Get("logingracetime"))
	ms, mErr := sshconfig.ParseMaxStartups(s.Get("maxstartups"))
	graceFix := "set LoginGraceTime " + strconv.Itoa(int(RecommendedLoginGrace.Seconds()))
	switch {
	case gErr != nil || mErr != nil:
		fs = append(fs, Finding{ID: IDPendingLogins, Severity: Error, Setting: "LoginGraceTime", Value: s.Get("logingracetime") + ", MaxStartups " + s.Get("maxstartups"),
			Message: "LoginGraceTime or MaxStartups cannot be read", Fix: graceFix})
	case grace == 0:
		fs = append(fs, Finding{ID: IDLoginGraceOff, Severity: Warning, Setting: "LoginGraceTime", Value: "0",
			Message: fmt.Sprintf("connections that never finish logging in are never dropped: password-guessing bots can hold up to %d of them, and sshd then refuses new ones (your own logins too)", ms.Full),
			Fix:     graceFix})
		fix = append(fix, Setting{"LoginGraceTime", strconv.Itoa(int(RecommendedLoginGrace.Seconds()))})
	case grace > maxLoginGrace || ms.Full > maxStartupsFull:
		fs = append(fs, Finding{ID: IDPendingLogins, Severity: Warning, Setting: "LoginGraceTime", Value: s.Get("logingracetime") + ", MaxStartups " + s.Get("maxstartups"),
			Message: fmt.Sprintf("up to %d connections may each wait %s to log in: password-guessing bots can keep that many sshd processes pending (they count as pending, never as sessions)", ms.Full, Human(grace)),
			Fix:     graceFix + fmt.Sprintf(" (and MaxStartups 10:30:%d by hand if needed)", maxStartupsFull)})
		if grace > RecommendedLoginGrace {
			fix = append(fix, Setting{"LoginGraceTime", strconv.Itoa(int(RecommendedLoginGrace.Seconds()))})
		}
	default:
		fs = append(fs, Finding{ID: IDPendingLogins, Severity: Info, Setting: "LoginGraceTime", Value: s.Get("logingracetime") + ", MaxStartups " + s.Get("maxstartups"),
			Message: fmt.Sprintf("a connection that does not log in is dropped after %s; beyond %d pending, sshd refuses %d%% of new connections, all at %d", Human(grace), ms.Start, ms.Rate, ms.Full)})
	}

	// PAM (logind sessions).
	if !sshconfig.ParseYes(s.Get("usepam")) {
		fs = append(fs, Finding{ID: IDUsePAMOff, Severity: Warning, Setting: "UsePAM", Value: s.Get("usepam"),
			Message: "without PAM, pam_systemd does not register SSH logins with logind: connwatch cannot see sessions through logind and falls back to /proc",
			Fix:     "set UsePAM yes after checking your PAM stack (not done by --fix: it changes how logins are authenticated)"})
	}

	// Log level.
	ll := strings.ToUpper(s.Get("loglevel"))
	switch ll {
	case "QUIET", "FATAL", "ERROR":
		fs = append(fs, Finding{ID: IDLogLevelLow, Severity: Warning, Setting: "LogLevel", Value: ll,
			Message: "sshd does not log \"Accepted ...\" or \"Disconnected ...\" lines at this level: the agent's sshd log source sees no logins",
			Fix:     "set LogLevel INFO (or VERBOSE for connection and session lines)"})
	case "INFO":
		fs = append(fs, Finding{ID: IDLogLevel, Severity: Info, Setting: "LogLevel", Value: ll,
			Message: "logins are logged (\"Accepted ...\", \"Disconnected ...\"); VERBOSE adds \"Connection from\" and session start/close lines"})
	case "VERBOSE":
		fs = append(fs, Finding{ID: IDLogLevel, Severity: Info, Setting: "LogLevel", Value: ll,
			Message: "logins, connections and session start/close are logged"})
	default:
		fs = append(fs, Finding{ID: IDLogLevel, Severity: Info, Setting: "LogLevel", Value: ll,
			Message: "debug logging is noisy and may log sensitive data; INFO or VERBOSE is enough for connwatch"})
	}

	if in.Version != (sshconfig.Version{}) {
		gen, desc := ProcessTitles(in.Version)
		fs = append(fs, Finding{ID: IDProcessTitles, Severity: Info, Setting: "version", Value: "OpenSSH " + in.Version.String(),
			Message: fmt.Sprintf("process titles of the %q generation: %s", gen, desc)})
	}
	return fs, dedupe(fix)
}

// ProcessTitles returns the process-title generation of an OpenSSH
// version and what it looks like in ps.
func ProcessTitles(v sshconfig.Version) (gen, desc string) {
	switch {
	case v.Less(sshconfig.Version{Major: 9, Minor: 8}):
		return "sshd:", "connections show as \"sshd: USER [priv]\", sessions as \"sshd: USER@pts/0\""
	case v.Less(sshconfig.Version{Major: 10}):
		return "sshd-session:", "per-connection processes are sshd-session: \"sshd-session: USER [priv]\", \"sshd-session: USER@pts/0\""
	case v.Less(sshconfig.Version{Major: 10, Minor: 5}):
		return "+sshd-auth", "authentication runs in sshd-auth (\"sshd-auth: USER [net]\"), sessions in sshd-session"
	}
	return "[postauth]", "the monitor after login shows as \"sshd-session: USER [postauth]\", the authentication child as sshd-auth"
}

// dedupe keeps the first setting of each key.
func dedupe(in []Setting) []Setting {
	seen := map[string]bool{}
	var out []Setting
	for _, s := range in {
		k := strings.ToLower(s.Key)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}
