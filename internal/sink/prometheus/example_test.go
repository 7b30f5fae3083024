package promsink_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/connwatch/connwatch/internal/session"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
)

// The agent observes every scan; Serve runs next to it until the
// agent's context is cancelled.
func Example() {
	m := promsink.New(promsink.Options{})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, "127.0.0.1:0", promsink.ServeOptions{}) }()

	snap := session.Snapshot{Sessions: []session.Session{
		{ID: "1", Kind: session.KindSSH, User: "alice", Mode: session.ModeTTY},
		{ID: "2", Kind: session.KindSSH, User: "bob", Mode: session.ModeForward},
	}}
	m.ObserveScan("sshd", 3*time.Millisecond, snap, nil)

	n, err := testutil.GatherAndCount(m.Gatherer(), "connwatch_sessions")
	fmt.Println(n, err)

	cancel()
	if err := <-done; err != nil {
		slog.Error("metrics server", "err", err)
	}
	// Output: 4 <nil>
}
