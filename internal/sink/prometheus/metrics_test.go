package promsink

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/session"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTest(t testing.TB, perUser bool) (*Metrics, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	return New(Options{PerUserLabels: perUser, Clock: clk}), clk
}

func sess(id, user string, mode session.Mode) session.Session {
	return session.Session{ID: id, Kind: session.KindSSH, User: user, Mode: mode, StartedAt: t0}
}

// compare checks the named metrics against the exposition text want
// (HELP and TYPE lines are added from the registry).
func compare(t *testing.T, m *Metrics, want string, names ...string) {
	t.Helper()
	var b strings.Builder
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	help := map[string]string{}
	for _, mf := range mfs {
		help[mf.GetName()] = fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n", mf.GetName(), mf.GetHelp(), mf.GetName(), strings.ToLower(mf.GetType().String()))
	}
	for _, block := range strings.Split(strings.TrimSpace(want), "\n\n") {
		name := strings.FieldsFunc(block, func(r rune) bool { return r == '{' || r == ' ' })[0]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if _, ok := help[name]; !ok {
				name = strings.TrimSuffix(name, suffix)
			}
		}
		b.WriteString(help[name])
		b.WriteString(strings.TrimSpace(block) + "\n")
	}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(b.String()), names...); err != nil {
		t.Error(err)
	}
}

func TestObserveScanSessions(t *testing.T) {
	m, _ := newTest(t, false)
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward"} 0
connwatch_sessions{kind="ssh",mode="notty"} 0
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 0

connwatch_pending_auth{kind="ssh"} 0
`, "connwatch_sessions", "connwatch_pending_auth")

	m.ObserveScan("sshd", 3*time.Millisecond, session.Snapshot{
		Time: t0,
		Sessions: []session.Session{
			sess("a", "alice", session.ModeTTY), sess("b", "bob", session.ModeTTY),
			sess("c", "alice", session.ModeNoTTY), sess("d", "carol", session.ModeForward),
			{ID: "e", User: "dave"}, // a source that knows neither kind nor mode
		},
		PendingAuth: []session.PendingAuth{{Kind: session.KindSSH, User: "root"}, {Kind: session.KindSSH}},
		Complete:    true,
	}, nil)
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward"} 1
connwatch_sessions{kind="ssh",mode="notty"} 1
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 2
connwatch_sessions{kind="unknown",mode="unknown"} 1

connwatch_pending_auth{kind="ssh"} 2
`, "connwatch_sessions", "connwatch_pending_auth")

	// Everyone leaves: the known series stay, at 0; the others go.
	m.ObserveScan("sshd", 2*time.Millisecond, session.Snapshot{Time: t0.Add(time.Second), Complete: true}, nil)
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward"} 0
connwatch_sessions{kind="ssh",mode="notty"} 0
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 0

connwatch_pending_auth{kind="ssh"} 0
`, "connwatch_sessions", "connwatch_pending_auth")
}

func TestObserveScanPerUser(t *testing.T) {
	m, _ := newTest(t, true)
	m.ObserveScan("sshd", time.Millisecond, session.Snapshot{
		Sessions: []session.Session{
			sess("a", "alice", session.ModeTTY), sess("b", "alice", session.ModeTTY),
			sess("c", "bob", session.ModeSFTP), sess("d", "", session.ModeTTY),
		},
	}, nil)
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward",user=""} 0
connwatch_sessions{kind="ssh",mode="notty",user=""} 0
connwatch_sessions{kind="ssh",mode="sftp",user=""} 0
connwatch_sessions{kind="ssh",mode="sftp",user="bob"} 1
connwatch_sessions{kind="ssh",mode="tty",user=""} 0
connwatch_sessions{kind="ssh",mode="tty",user="alice"} 2
connwatch_sessions{kind="ssh",mode="tty",user="unknown"} 1
`, "connwatch_sessions")

	// bob leaves: his series goes away rather than staying at 0.
	m.ObserveScan("sshd", time.Millisecond, session.Snapshot{Sessions: []session.Session{sess("a", "alice", session.ModeTTY)}}, nil)
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward",user=""} 0
connwatch_sessions{kind="ssh",mode="notty",user=""} 0
connwatch_sessions{kind="ssh",mode="sftp",user=""} 0
connwatch_sessions{kind="ssh",mode="tty",user=""} 0
connwatch_sessions{kind="ssh",mode="tty",user="alice"} 1
`, "connwatch_sessions")
}

func TestObserveScanSelfMetrics(t *testing.T) {
	m, clk := newTest(t, false)
	two := session.Snapshot{Sessions: []session.Session{sess("a", "alice", session.ModeTTY), sess("b", "bob", session.ModeTTY)}}

	m.ObserveScan("sshd", 3*time.Millisecond, two, nil)
	clk.Advance(time.Second)
	// A failed scan counts as an error, keeps the last known sessions and
	// the last success.
	m.ObserveScan("sshd", 20*time.Millisecond, session.Snapshot{}, errors.New("read /proc: permission denied"))
	m.ObserveScan("authlog", 200*time.Microsecond, session.Snapshot{}, errors.New("open auth.log: no such file"))

	compare(t, m, fmt.Sprintf(`
connwatch_sessions{kind="ssh",mode="forward"} 0
connwatch_sessions{kind="ssh",mode="notty"} 0
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 2

connwatch_source_errors_total{source="authlog"} 1
connwatch_source_errors_total{source="sshd"} 1

connwatch_source_last_success_timestamp_seconds{source="authlog"} 0
connwatch_source_last_success_timestamp_seconds{source="sshd"} %d
`, t0.Unix()), "connwatch_sessions", "connwatch_source_errors_total", "connwatch_source_last_success_timestamp_seconds")

	if got, want := testutil.CollectAndCount(m.scanDuration), 2; got != want {
		t.Errorf("scan duration series = %d, want %d", got, want)
	}
	compare(t, m, `
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.0005"} 0
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.001"} 0
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.0025"} 0
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.005"} 1
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.01"} 1
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.025"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.05"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.1"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.25"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="0.5"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="1"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="2.5"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="5"} 2
connwatch_source_scan_duration_seconds_bucket{source="sshd",le="+Inf"} 2
connwatch_source_scan_duration_seconds_sum{source="sshd"} 0.023
connwatch_source_scan_duration_seconds_count{source="sshd"} 2
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.0005"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.001"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.0025"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.005"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.01"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.025"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.05"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.1"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.25"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="0.5"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="1"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="2.5"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="5"} 1
connwatch_source_scan_duration_seconds_bucket{source="authlog",le="+Inf"} 1
connwatch_source_scan_duration_seconds_sum{source="authlog"} 0.0002
connwatch_source_scan_duration_seconds_count{source="authlog"} 1
`, "connwatch_source_scan_duration_seconds")

	// Recovery moves the last success on.
	clk.Advance(time.Second)
	m.ObserveScan("sshd", time.Millisecond, session.Snapshot{}, nil)
	if got, want := testutil.ToFloat64(m.scanLastSuccess.WithLabelValues("sshd")), float64(t0.Add(2*time.Second).Unix()); got != want {
		t.Errorf("last success = %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(m.scanErrors.WithLabelValues("sshd")); got != 1 {
		t.Errorf("errors = %v, want 1", got)
	}
}

func TestObserveEvents(t *testing.T) {
	m, _ := newTest(t, false)
	a, b := sess("a", "alice", session.ModeTTY), sess("b", "bob", session.ModeForward)
	m.ObserveEvents([]event.Event{
		{Type: event.SessionStart, Session: &a},
		{Type: event.SessionStart, Session: &b},
		{Type: event.SessionEnd, Session: &a},
		{Type: event.IdleStart},
		{Type: event.StopWarning},
		{Type: event.StopFailed},
		{Type: event.Stop},
		{Type: event.Stop},
	})
	m.ObserveEvents(nil)
	m.ObserveEvents([]event.Event{{Type: event.SessionEnd}})
	compare(t, m, `
connwatch_session_starts_total{kind="ssh"} 2

connwatch_session_ends_total{kind="ssh"} 1
connwatch_session_ends_total{kind="unknown"} 1

connwatch_stop_actions_total{result="error"} 1
connwatch_stop_actions_total{result="ok"} 2
`, "connwatch_session_starts_total", "connwatch_session_ends_total", "connwatch_stop_actions_total")
}

func TestObservePolicy(t *testing.T) {
	m, _ := newTest(t, false)
	// Before any observation: everything present, at 0.
	compare(t, m, `
connwatch_idle_seconds 0

connwatch_stop_deadline_timestamp_seconds 0

connwatch_blind 0

connwatch_holds{kind="boot-grace"} 0
connwatch_holds{kind="error"} 0
connwatch_holds{kind="inhibit"} 0
connwatch_holds{kind="load"} 0
connwatch_holds{kind="process"} 0
connwatch_holds{kind="start-hold"} 0

connwatch_stop_actions_total{result="error"} 0
connwatch_stop_actions_total{result="ok"} 0

connwatch_session_starts_total{kind="ssh"} 0
`, "connwatch_idle_seconds", "connwatch_stop_deadline_timestamp_seconds", "connwatch_blind", "connwatch_holds",
		"connwatch_stop_actions_total", "connwatch_session_starts_total")

	idleSince := t0.Add(-90 * time.Second)
	due := t0.Add(13*time.Minute + 30*time.Second)
	m.ObservePolicy(t0, policy.Status{IdleSince: &idleSince, StopDueAt: &due, Holds: []policy.Hold{}})
	compare(t, m, fmt.Sprintf(`
connwatch_idle_seconds 90

connwatch_stop_deadline_timestamp_seconds %d

connwatch_blind 0
`, due.Unix()), "connwatch_idle_seconds", "connwatch_stop_deadline_timestamp_seconds", "connwatch_blind")

	// Busy with holds, then blind.
	m.ObservePolicy(t0.Add(time.Minute), policy.Status{Holds: []policy.Hold{
		{Kind: "inhibit", Name: "backup"}, {Kind: "inhibit", Name: "build"}, {Kind: "gpu", Name: "training"},
	}})
	compare(t, m, `
connwatch_idle_seconds 0

connwatch_stop_deadline_timestamp_seconds 0

connwatch_holds{kind="boot-grace"} 0
connwatch_holds{kind="error"} 0
connwatch_holds{kind="gpu"} 1
connwatch_holds{kind="inhibit"} 2
connwatch_holds{kind="load"} 0
connwatch_holds{kind="process"} 0
connwatch_holds{kind="start-hold"} 0
`, "connwatch_idle_seconds", "connwatch_stop_deadline_timestamp_seconds", "connwatch_holds")

	m.ObservePolicy(t0.Add(2*time.Minute), policy.Status{IdleSince: &idleSince, Blind: true})
	compare(t, m, `
connwatch_idle_seconds 210

connwatch_stop_deadline_timestamp_seconds 0

connwatch_blind 1

connwatch_holds{kind="boot-grace"} 0
connwatch_holds{kind="error"} 0
connwatch_holds{kind="inhibit"} 0
connwatch_holds{kind="load"} 0
connwatch_holds{kind="process"} 0
connwatch_holds{kind="start-hold"} 0
`, "connwatch_idle_seconds", "connwatch_stop_deadline_timestamp_seconds", "connwatch_blind", "connwatch_holds")

	// A clock step backwards never gives negative idle time.
	m.ObservePolicy(idleSince.Add(-time.Second), policy.Status{IdleSince: &idleSince})
	if got := testutil.ToFloat64(m.idle); got != 0 {
		t.Errorf("idle = %v, want 0", got)
	}
}

func TestObserveSink(t *testing.T) {
	m, clk := newTest(t, false)
	m.ObserveSink("webhook", 120*time.Millisecond, nil, 0)
	clk.Advance(time.Minute)
	m.ObserveSink("webhook", 5*time.Second, errors.New("post: connection refused"), 3)
	m.ObserveSink("cloudwatch", 40*time.Millisecond, errors.New("put metric data: throttled"), 7)
	compare(t, m, fmt.Sprintf(`
connwatch_sink_errors_total{sink="cloudwatch"} 1
connwatch_sink_errors_total{sink="webhook"} 1

connwatch_sink_last_success_timestamp_seconds{sink="cloudwatch"} 0
connwatch_sink_last_success_timestamp_seconds{sink="webhook"} %d

connwatch_sink_pending{sink="cloudwatch"} 7
connwatch_sink_pending{sink="webhook"} 3
`, t0.Unix()), "connwatch_sink_errors_total", "connwatch_sink_last_success_timestamp_seconds", "connwatch_sink_pending")

	if got := testutil.CollectAndCount(m.sinkDuration); got != 2 {
		t.Errorf("sink duration series = %d, want 2", got)
	}
	clk.Advance(time.Minute)
	m.ObserveSink("webhook", 80*time.Millisecond, nil, 0)
	if got, want := testutil.ToFloat64(m.sinkLastSuccess.WithLabelValues("webhook")), float64(t0.Add(2*time.Minute).Unix()); got != want {
		t.Errorf("last success = %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(m.sinkPending.WithLabelValues("webhook")); got != 0 {
		t.Errorf("pending = %v, want 0", got)
	}
}

// TestLint runs client_golang's linter (the rules promtool applies) over
// everything connwatch exports.
func TestLint(t *testing.T) {
	m, _ := newTest(t, true)
	observeAll(m)
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "connwatch_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// observeAll makes every connwatch series exist.
func observeAll(m *Metrics) {
	a := sess("a", "alice", session.ModeTTY)
	m.ObserveScan("sshd", time.Millisecond, session.Snapshot{Sessions: []session.Session{a}, PendingAuth: []session.PendingAuth{{Kind: session.KindSSH}}}, nil)
	m.ObserveEvents([]event.Event{{Type: event.SessionStart, Session: &a}, {Type: event.SessionEnd, Session: &a}, {Type: event.Stop}})
	idle := t0.Add(-time.Minute)
	due := t0.Add(time.Minute)
	m.ObservePolicy(t0, policy.Status{IdleSince: &idle, StopDueAt: &due, Holds: []policy.Hold{{Kind: "inhibit"}}})
	m.ObserveSink("events", time.Millisecond, nil, 0)
}

// TestConcurrent runs observations from several goroutines while
// gathering, for the race detector.
func TestConcurrent(t *testing.T) {
	m, _ := newTest(t, true)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				observeAll(m)
				m.ObserveSink(fmt.Sprint("sink", i), time.Millisecond, nil, j)
			}
		})
	}
	for range 20 {
		if _, err := m.reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got := testutil.ToFloat64(m.sessionStarts.WithLabelValues("ssh")); got != 800 {
		t.Errorf("session starts = %v, want 800", got)
	}
}

func TestVPNKinds(t *testing.T) {
	clk := clock.NewFake(t0)
	m := New(Options{Clock: clk, Kinds: []session.Kind{session.KindSSH, session.KindWireGuard, session.KindAWSClientVPN}})
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward"} 0
connwatch_sessions{kind="ssh",mode="notty"} 0
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 0
connwatch_sessions{kind="aws-client-vpn",mode=""} 0
connwatch_sessions{kind="wireguard",mode=""} 0
`, "connwatch_sessions")
	peer := session.Session{ID: "wg-1", Kind: session.KindWireGuard, User: "alice", StartedAt: t0}
	m.ObserveScan("sshd", time.Millisecond, session.Snapshot{Time: t0, Complete: true, Sessions: []session.Session{peer, sess("a", "bob", session.ModeTTY)}}, nil)
	m.ObservePoll("wireguard", 2*time.Millisecond, nil)
	m.ObservePoll("aws-client-vpn", 300*time.Millisecond, errors.New("throttled"))
	m.ObserveEvents([]event.Event{{Type: event.SessionStart, Session: &peer}})
	compare(t, m, `
connwatch_sessions{kind="ssh",mode="forward"} 0
connwatch_sessions{kind="ssh",mode="notty"} 0
connwatch_sessions{kind="ssh",mode="sftp"} 0
connwatch_sessions{kind="ssh",mode="tty"} 1
connwatch_sessions{kind="aws-client-vpn",mode=""} 0
connwatch_sessions{kind="wireguard",mode=""} 1

connwatch_session_starts_total{kind="ssh"} 0
connwatch_session_starts_total{kind="wireguard"} 1
connwatch_session_starts_total{kind="aws-client-vpn"} 0

connwatch_source_errors_total{source="aws-client-vpn"} 1
connwatch_source_errors_total{source="sshd"} 0
connwatch_source_errors_total{source="wireguard"} 0
`, "connwatch_sessions", "connwatch_session_starts_total", "connwatch_source_errors_total")
}
