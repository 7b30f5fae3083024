package authlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// fakeJournalctl is a journalctl stand-in. Run number N appends its
// arguments to "args", prints the file "out.N" if there is one, then exits
// with the status in "exit.N" (printing "stderr.N" to stderr) or, without
// one, waits like journalctl -f does.
const fakeJournalctl = `#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/args"
n=$(wc -l < "$d/args")
[ -f "$d/out.$n" ] && cat "$d/out.$n"
[ -f "$d/stderr.$n" ] && cat "$d/stderr.$n" >&2
[ -f "$d/exit.$n" ] && exit "$(cat "$d/exit.$n")"
exec sleep 300
`

type journalHarness struct {
	t        *testing.T
	bin      string // directory of the fake journalctl
	state    string
	clk      *clock.Fake
	journal  *Journal
	out      chan Event
	restarts chan time.Duration
	done     chan error
	cancel   context.CancelFunc
}

func newJournalHarness(t *testing.T, state string) *journalHarness {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "journalctl"), []byte(fakeJournalctl), 0o755); err != nil {
		t.Fatal(err)
	}
	jdir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(jdir, "3d1219c7c4c5404aaa1f6d2a48adfda4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jdir, "3d1219c7c4c5404aaa1f6d2a48adfda4", "system.journal"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC))
	return &journalHarness{
		t:     t,
		bin:   bin,
		state: state,
		clk:   clk,
		journal: NewJournal(JournalOptions{
			StateDir:    state,
			Command:     []string{filepath.Join(bin, "journalctl")},
			JournalDirs: []string{jdir},
			Clock:       clk,
		}),
		out:      make(chan Event, 100),
		restarts: make(chan time.Duration, 10),
		done:     make(chan error, 1),
	}
}

// script sets what run n of the fake prints and how it ends (exit < 0:
// it keeps running).
func (h *journalHarness) script(n int, out string, exit int, stderr string) {
	h.t.Helper()
	name := func(kind string) string { return filepath.Join(h.bin, kind+"."+string(rune('0'+n))) }
	if err := os.WriteFile(name("out"), []byte(out), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if exit >= 0 {
		if err := os.WriteFile(name("exit"), []byte(string(rune('0'+exit))), 0o644); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(name("stderr"), []byte(stderr), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *journalHarness) start() {
	h.journal.restarting = func(d time.Duration) { h.restarts <- d }
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.journal.Run(ctx, h.out) }()
	h.t.Cleanup(func() {
		cancel()
		<-h.done
	})
}

func (h *journalHarness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if !errors.Is(err, context.Canceled) {
			h.t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return within 10 s of the cancel")
	}
	h.done <- nil // for the cleanup
}

func (h *journalHarness) events(n int) []Event {
	h.t.Helper()
	var evs []Event
	for len(evs) < n {
		select {
		case ev := <-h.out:
			evs = append(evs, ev)
		case err := <-h.done:
			h.t.Fatalf("Run returned %v after %d events", err, len(evs))
		case <-time.After(10 * time.Second):
			h.t.Fatalf("got %d events in 10 s, want %d", len(evs), n)
		}
	}
	return evs
}

func (h *journalHarness) restart() time.Duration {
	h.t.Helper()
	select {
	case d := <-h.restarts:
		h.clk.Advance(d)
		return d
	case err := <-h.done:
		h.t.Fatalf("Run returned %v", err)
	case <-time.After(10 * time.Second):
		h.t.Fatal("no restart in 10 s")
	}
	return 0
}

func (h *journalHarness) args() []string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.bin, "args"))
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (h *journalHarness) savedCursor() string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.state, CursorFile))
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// fixture returns the lines of the real journal capture.
func fixture(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "journald", "sshd-252.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, MaxLineBytes)
	for sc.Scan() {
		lines = append(lines, sc.Text()+"\n")
	}
	return lines
}

func cursorOf(t *testing.T, line string) string {
	t.Helper()
	_, c, _ := parseJournalJSON(line, time.Time{})
	if c == "" {
		t.Fatalf("no cursor in %q", line)
	}
	return c
}

func TestJournalFollowRestartResume(t *testing.T) {
	lines := fixture(t)
	// Lines 0-5: listening, connection, key found, postponed, key found,
	// accepted. Line 0 is not an event.
	first, second := lines[:6], lines[6:12]
	state := t.TempDir()
	h := newJournalHarness(t, state)
	h.script(1, strings.Join(first, ""), 1, "journalctl: something broke\n")
	h.script(2, strings.Join(second, ""), -1, "")
	h.start()

	evs := h.events(5)
	if evs[4].Kind != Accepted || evs[4].User != "cwtest" || evs[4].Port != 55904 || evs[4].PID != 2883 {
		t.Errorf("event %+v, want cwtest's Accepted on port 55904 by 2883", evs[4])
	}
	if d := h.restart(); d != time.Second {
		t.Errorf("first restart after %v, want 1s", d)
	}
	evs = h.events(2) // session opened, starting session; pam_limits, pam_env, "User child" are not events
	if evs[0].Kind != SessionOpened {
		t.Errorf("first event after the restart %+v", evs[0])
	}
	h.stop()
	if got, want := h.savedCursor(), cursorOf(t, second[len(second)-1]); got != want {
		t.Errorf("cursor file after stop %q, want %q", got, want)
	}

	args := h.args()
	if len(args) != 2 {
		t.Fatalf("journalctl ran %d times: %q", len(args), args)
	}
	wantFirst := strings.Join(h.journal.Args(""), " ")
	if args[0] != wantFirst || !strings.Contains(args[0], "--lines=0") || strings.Contains(args[0], "cursor") {
		t.Errorf("first run %q, want %q", args[0], wantFirst)
	}
	if want := strings.Join(h.journal.Args(cursorOf(t, first[5])), " "); args[1] != want {
		t.Errorf("restart %q, want %q", args[1], want)
	}
	for _, want := range []string{"--follow", "--output=json", "SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sshd-session"} {
		if !strings.Contains(args[0], want) {
			t.Errorf("arguments %q lack %q", args[0], want)
		}
	}

	// A new Journal on the same state resumes after the saved cursor.
	h2 := newJournalHarness(t, state)
	h2.script(1, strings.Join(lines[12:14], ""), -1, "")
	h2.start()
	h2.events(1)
	h2.stop()
	want := strings.Join(h2.journal.Args(cursorOf(t, second[len(second)-1])), " ")
	if got := h2.args(); len(got) != 1 || got[0] != want || !strings.Contains(want, "--no-tail") {
		t.Errorf("resumed with %q, want %q", got, want)
	}
}

func TestJournalBackoffAndBadCursor(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, CursorFile), []byte("s=bogus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newJournalHarness(t, state)
	for n := 1; n <= 4; n++ {
		h.script(n, "", 1, "Failed to seek to cursor: Invalid argument\n")
	}
	h.start()
	var waits []time.Duration
	for range 4 {
		waits = append(waits, h.restart())
	}
	if got := waits; got[0] != time.Second || got[1] != 2*time.Second || got[2] != 4*time.Second || got[3] != 8*time.Second {
		t.Errorf("restart waits %v, want doubling from 1s", got)
	}
	args := h.args()
	if !strings.Contains(args[0], "--after-cursor=s=bogus") || !strings.Contains(args[1], "--lines=0") {
		t.Errorf("the rejected cursor was not dropped: %q", args)
	}
	h.stop()
}

func TestJournalCheck(t *testing.T) {
	j := NewJournal(JournalOptions{Command: []string{"/nonexistent/journalctl"}})
	err := j.Run(context.Background(), make(chan Event))
	if !errors.Is(err, ErrNoJournalctl) {
		t.Errorf("Run without journalctl = %v, want ErrNoJournalctl", err)
	}
	empty := t.TempDir()
	j = NewJournal(JournalOptions{Command: []string{"sh"}, JournalDirs: []string{empty, filepath.Join(empty, "missing")}})
	err = j.Run(context.Background(), make(chan Event))
	if !errors.Is(err, ErrNoJournal) || !strings.Contains(err.Error(), empty) {
		t.Errorf("Run without journal files = %v, want ErrNoJournal naming %s", err, empty)
	}
	t.Logf("%v", err)
	if err := NewJournal(JournalOptions{Command: []string{"sh"}, JournalDirs: []string{}}).Check(); err != nil {
		t.Errorf("Check with no directories to check = %v", err)
	}
}

// TestJournalLive runs Journal against a real journald and journalctl,
// logging sshd-like lines with logger(1). It runs only with
// AUTHLOG_JOURNAL=1, for example inside testdata/journald/capture.sh,
// which starts a private journald (this machine and CI have none).
func TestJournalLive(t *testing.T) {
	if os.Getenv("AUTHLOG_JOURNAL") != "1" {
		t.Skip("set AUTHLOG_JOURNAL=1 where a journald runs (see testdata/journald/capture.sh)")
	}
	if _, err := exec.LookPath("logger"); err != nil {
		t.Fatal(err)
	}
	line := func(port int) string {
		return fmt.Sprintf("Accepted publickey for live from 192.0.2.1 port %d ssh2: ED25519 SHA256:live", port)
	}
	logLine := func(port int) {
		t.Helper()
		if out, err := exec.Command("logger", "-t", "sshd", line(port)).CombinedOutput(); err != nil {
			t.Fatalf("logger: %v: %s", err, out)
		}
	}
	// inJournal waits until journald has stored the line.
	inJournal := func(port int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := exec.Command("journalctl", "-q", "-o", "cat", "SYSLOG_IDENTIFIER=sshd").Output()
			if strings.Contains(string(out), line(port)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("line with port %d not in the journal", port)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	state := t.TempDir()
	run := func() (chan Event, func()) {
		j := NewJournal(JournalOptions{StateDir: state})
		if err := j.Check(); err != nil {
			t.Fatal(err)
		}
		out := make(chan Event, 100)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- j.Run(ctx, out) }()
		return out, func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5 s of the cancel")
			}
		}
	}

	logLine(1000)
	inJournal(1000) // before the start: not delivered
	out, stop := run()
	// journalctl starts at the end of the journal once it runs: log until
	// a line comes through, then wait for the last one logged.
	port := 1001
	var got []int
	for ; len(got) == 0; port++ {
		if port > 1100 {
			t.Fatal("no line came through journalctl in 100 tries")
		}
		logLine(port)
		select {
		case ev := <-out:
			got = append(got, ev.Port)
		case <-time.After(200 * time.Millisecond):
		}
	}
	last := port - 1
	for got[len(got)-1] != last {
		select {
		case ev := <-out:
			got = append(got, ev.Port)
		case <-time.After(5 * time.Second):
			t.Fatalf("got ports %v, never %d", got, last)
		}
	}
	if got[0] == 1000 {
		t.Errorf("a line from before the start came through: %v", got)
	}
	stop()
	t.Logf("first run: ports %v", got)

	logLine(2000) // while stopped
	inJournal(2000)
	out, stop = run()
	select {
	case ev := <-out:
		if ev.Port != 2000 || ev.Kind != Accepted || ev.User != "live" || ev.PID == 0 {
			t.Errorf("first event after the restart %+v, want port 2000 from logger", ev)
		}
		t.Logf("resumed with %+v (%v old)", ev, time.Since(ev.Time))
	case <-time.After(10 * time.Second):
		t.Fatal("nothing after the restart")
	}
	stop()
}

// TestJournalIgnoresForgedLogins follows, through a journalctl stand-in,
// entries as journald records what `logger -t sshd` writes (derived in
// testdata/journald/logger-forged.json: a user's logger, one claiming a
// real sshd's pid with --id, one that exited before journald looked, a
// user's copy of logger named sshd, root's logger), between two real
// logins: only the real logins come, and the forged end (ends pass from
// any sender, see Origin) comes as an end.
func TestJournalIgnoresForgedLogins(t *testing.T) {
	real := fixture(t)
	b, err := os.ReadFile(filepath.Join("testdata", "journald", "logger-forged.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := newJournalHarness(t, t.TempDir())
	// real[5] and real[20] are cwtest's Accepted lines from sshd.
	h.script(1, real[5]+string(b)+real[20], -1, "")
	h.start()
	evs := h.events(3)
	h.stop()
	if evs[0].Kind != Accepted || evs[0].Port != 55904 || evs[0].Origin != OriginJournal {
		t.Errorf("first event %+v, want the real login on port 55904", evs[0])
	}
	if evs[1].Kind != Disconnected || evs[1].Port != 5 {
		t.Errorf("second event %+v, want the forged end", evs[1])
	}
	if evs[2].Kind != Accepted || evs[2].Port != 55912 {
		t.Errorf("third event %+v, want the real login on port 55912", evs[2])
	}
	for _, e := range evs {
		if e.User == "root" && e.Kind == Accepted {
			t.Errorf("forged login delivered: %+v", e)
		}
	}
}

// TestJournalTrust lists what journald must say for an Accepted entry to
// count.
func TestJournalTrust(t *testing.T) {
	const msg = `"SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted publickey for root from 127.0.0.1 port 5 ssh2"`
	for _, tc := range []struct {
		fields string
		want   bool
	}{
		{`"_UID":"0","_EXE":"/usr/sbin/sshd","_COMM":"sshd"`, true},
		{`"_UID":"0","_EXE":"/usr/lib/openssh/sshd-session","_COMM":"sshd-session"`, true},
		{`"_UID":"0","_EXE":"/usr/sbin/sshd (deleted)","_COMM":"sshd"`, true},
		{`"_UID":"0","_SYSTEMD_UNIT":"ssh.service","_EXE":"/usr/bin/perl","_COMM":"perl"`, true},
		{`"_UID":"0","_SYSTEMD_UNIT":"ssh@3-10.0.0.5:22-203.0.113.9:4000.service","_COMM":"x"`, true},
		{`"_UID":"0"`, true}, // exited before journald looked: root's word
		{`"_UID":"0","_EXE":"/usr/bin/logger","_COMM":"logger"`, false},
		{`"_UID":"1000","_EXE":"/usr/sbin/sshd","_COMM":"sshd"`, false},
		{`"_UID":"1000","_SYSTEMD_UNIT":"ssh.service"`, false},
		{`"_UID":"1000"`, false},
		{``, false}, // no _UID at all: not journald's word
	} {
		line := "{" + msg
		if tc.fields != "" {
			line += "," + tc.fields
		}
		line += "}"
		if _, ok := ParseLine(line, time.Now()); ok != tc.want {
			t.Errorf("%s: ok = %v, want %v", tc.fields, ok, tc.want)
		}
	}
}
