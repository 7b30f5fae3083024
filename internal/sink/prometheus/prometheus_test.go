package promsink

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/promtest"
)

// Bounds of the waits in TestPrometheusScrapes: together well under a
// minute even when every one runs out; a normal run takes 2-4 s.
const (
	promReadyTimeout = 10 * time.Second
	promFirstTimeout = 15 * time.Second // includes the first scrape
	promNextTimeout  = 10 * time.Second
)

// TestPrometheusScrapes runs a real Prometheus (Debian's package) that
// scrapes a Metrics server every second, and reads the values back
// through its query API.
//
// Prometheus only talks to loopback: it listens on 127.0.0.1, scrapes a
// static 127.0.0.1 target, and has no remote write, remote read, service
// discovery, alertmanagers or rules; it runs with an empty environment
// (no proxies) and keeps its data in a temporary directory.
func TestPrometheusScrapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server (a few seconds); skipped with -short")
	}
	bin := requireBinary(t, "prometheus")

	m, _ := newTest(t, false)
	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(2), nil)
	target := serveForTest(t, m)

	p := promtest.Start(t, bin, target)
	if err := eventually(promReadyTimeout, func() error { return p.Ready() }); err != nil {
		t.Fatalf("prometheus not ready after %v: %v\n%s", promReadyTimeout, err, p.Log())
	}

	const query = `connwatch_sessions{mode="tty"}`
	waitValue := func(want string, d time.Duration) {
		t.Helper()
		start := time.Now()
		err := eventually(d, func() error { return p.QueryValue(query, want) })
		if err != nil {
			targets, _ := p.Get("/api/v1/targets")
			t.Fatalf("%s never became %s within %v: %v\ntargets: %s\nprometheus log:\n%s", query, want, d, err, targets, p.Log())
		}
		t.Logf("%s = %s after %v", query, want, time.Since(start).Round(time.Millisecond))
	}
	waitValue("2", promFirstTimeout)

	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(3), nil)
	waitValue("3", promNextTimeout)

	if err := p.Stop(); err != nil {
		t.Errorf("stop prometheus: %v\n%s", err, p.Log())
	}
}

func snapshotTTY(n int) session.Snapshot {
	var snap session.Snapshot
	for i := range n {
		snap.Sessions = append(snap.Sessions, sess(fmt.Sprint("s", i), "alice", session.ModeTTY))
	}
	snap.Sessions = append(snap.Sessions, sess("fwd", "bob", session.ModeForward))
	return snap
}

// serveForTest serves m on a loopback port until the end of the test and
// returns its address.
func serveForTest(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln, ServeOptions{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	})
	return ln.Addr().String()
}
