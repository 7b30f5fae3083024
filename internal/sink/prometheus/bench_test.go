package promsink

import (
	"fmt"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
)

// BenchmarkObserveScan is the agent's per-scan cost (every second, and
// every 10 ms in a burst) with 100 sessions over 10 users.
func BenchmarkObserveScan(b *testing.B) {
	modes := []session.Mode{session.ModeTTY, session.ModeNoTTY, session.ModeForward, session.ModeSFTP}
	var snap session.Snapshot
	for i := range 100 {
		snap.Sessions = append(snap.Sessions, sess(fmt.Sprint("s", i), fmt.Sprint("user", i%10), modes[i%len(modes)]))
	}
	snap.PendingAuth = []session.PendingAuth{{Kind: session.KindSSH}, {Kind: session.KindSSH}}
	for _, perUser := range []bool{false, true} {
		b.Run(fmt.Sprintf("per-user=%v", perUser), func(b *testing.B) {
			m, _ := newTest(b, perUser)
			b.ReportAllocs()
			for b.Loop() {
				m.ObserveScan("sshd", 2*time.Millisecond, snap, nil)
			}
		})
	}
}
