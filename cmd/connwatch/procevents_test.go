package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/procevents"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// fakeListener feeds events and records filters. Run closes started (when
// set) and returns what fail sends.
type fakeListener struct {
	events  chan procevents.Event
	started chan struct{}
	fail    chan error
	mu      sync.Mutex
	filters [][]int
}

func (f *fakeListener) Run(ctx context.Context, out chan<- procevents.Event) error {
	if f.started != nil {
		close(f.started)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-f.fail:
			return err
		case e := <-f.events:
			out <- e
		}
	}
}

func (f *fakeListener) Filter(pids []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, slices.Clone(pids))
	return nil
}

func (f *fakeListener) lastFilter() ([]int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.filters) == 0 {
		return nil, 0
	}
	return f.filters[len(f.filters)-1], len(f.filters)
}

func (f *fakeListener) Close() error { return nil }

// TestFollowProcEvents: the kernel filter is set from the start (nothing
// watched before a scan finds sshd), follows the source's watched
// processes, and only their events kick.
func TestFollowProcEvents(t *testing.T) {
	dir := t.TempDir()
	tree := procfixture.Tree{BootTime: 1_700_000_000, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 100, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"},
		{PID: 300, PPID: 1, UID: 1000, Comm: "sshd-forker", Title: "sshd-forker", Exe: "/home/u/sshd-forker"},
	}}
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	src := sshd.New(sshd.Options{ProcRoot: dir, Clock: clock.NewFake(time.Unix(1_700_003_600, 0))})
	l := &fakeListener{events: make(chan procevents.Event)}
	kicks := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- followProcEvents(ctx, l, src, func() { kicks <- struct{}{} }) }()
	waitFilter := func(want []int, n int) {
		t.Helper()
		for range 1000 {
			if got, count := l.lastFilter(); count >= n && slices.Equal(got, want) {
				return
			}
			time.Sleep(time.Millisecond)
		}
		got, count := l.lastFilter()
		t.Fatalf("filter %v after %d calls, want %v", got, count, want)
	}
	waitFilter([]int{}, 1)
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFilter([]int{100}, 2)

	send := func(e procevents.Event) { l.events <- e }
	send(procevents.Event{Kind: procevents.Fork, PID: 301, ParentPID: 300}) // the user's fork loop
	send(procevents.Event{Kind: procevents.Exit, PID: 301, ParentPID: 300})
	send(procevents.Event{Kind: procevents.Fork, PID: 101, ParentPID: 100}) // a connection
	waitFilter([]int{100, 101}, 3)
	if n := len(kicks); n != 1 {
		t.Errorf("%d kicks, want 1 (the listener's fork)", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("followProcEvents: %v", err)
	}
}

// TestProcEventsFailWalksAgain: while events come, scans read only the
// sshd trees (a listener started from a shell is not seen before the
// backstop walk); when the subscription fails, every scan walks /proc
// again and sees it.
func TestProcEventsFailWalksAgain(t *testing.T) {
	dir := t.TempDir()
	tree := procfixture.Tree{BootTime: 1_700_000_000, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 50, PPID: 1, Comm: "bash", Title: "-bash"},
	}}
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Unix(1_700_003_600, 0))
	src := sshd.New(sshd.Options{ProcRoot: dir, Clock: clk})
	l := &fakeListener{events: make(chan procevents.Event), started: make(chan struct{}), fail: make(chan error)}
	done := make(chan error, 1)
	go func() { done <- followProcEvents(context.Background(), l, src, func() {}) }()
	<-l.started
	sessions := func() int {
		t.Helper()
		clk.Advance(time.Second)
		snap, err := src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Sessions)
	}
	sessions() // walks: the first scan with events
	later := procfixture.Tree{BootTime: 1_700_000_000, Procs: []procfixture.Proc{
		{PID: 100, PPID: 50, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", StartTicks: 360_000},
		{PID: 200, PPID: 100, Comm: "sshd", Title: "sshd: bob [priv]", StartTicks: 360_001},
		{PID: 201, PPID: 200, Comm: "sshd", Title: "sshd: bob", StartTicks: 360_002},
	}}
	if err := later.Write(dir); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if n := sessions(); n != 0 {
			t.Fatalf("%d sessions under a listener no walk saw, with events", n)
		}
	}
	l.fail <- errors.New("netlink socket gone")
	if err := <-done; err == nil {
		t.Error("followProcEvents returned nil after its listener failed")
	}
	if n := sessions(); n != 1 {
		t.Errorf("%d sessions after events stopped, want 1 (a walk)", n)
	}
}
