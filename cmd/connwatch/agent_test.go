package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAgentEndToEnd runs the agent as the binary does on the recorded
// OpenSSH tree plus a machine with nobody connected, with a tiny window,
// and checks that the command action runs once and the events say so.
func TestAgentEndToEnd(t *testing.T) {
	dir := t.TempDir()
	// An empty machine: no processes, a boot time long ago.
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "sys", "kernel", "random"), 0o755)
	os.WriteFile(filepath.Join(proc, "stat"), []byte("btime 1700000000\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "sys", "kernel", "random", "boot_id"), []byte("3a1f6c1e-0000-4000-8000-000000000001\n"), 0o644)
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	marker := filepath.Join(dir, "stopped")
	warned := filepath.Join(dir, "warned")
	events := filepath.Join(dir, "events.jsonl")

	// A webhook that is down for its first three requests.
	var (
		mu       sync.Mutex
		received []string
		attempts int
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts <= 3 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var m struct {
			Type string `json:"type"`
			Key  string `json:"key"`
			Host string `json:"host"`
		}
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.Key == "" || m.Key != r.Header.Get("Idempotency-Key") || m.Host == "" {
			t.Errorf("webhook body: %+v %v", m, err)
		}
		received = append(received, m.Type)
	}))
	defer hook.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCLIContext(ctx, []string{"agent", "--proc", proc, "--state-dir", filepath.Join(dir, "state"),
			"--events", events, "--period", "1s", "--idle-after", "2s", "--boot-grace", "0", "--warn-before", "1s",
			"--action", "command", "--action-command", "echo \"$CONNWATCH_REASON\" >> " + marker, "--wall=false", "--metrics-addr", "", "--sshd-log", "",
			"--warn-command", "echo \"$CONNWATCH_STOP_AT\" > " + warned, "--webhook", hook.URL})
		done <- code
	}()
	deadline := time.Now().Add(6 * time.Second)
	for {
		if b, err := os.ReadFile(marker); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the action did not run; events:\n%s", readFile(events))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // another period: no second action
	// The webhook gets the warning and the stop, in order, once it is up
	// (the outbox backs off 1 s, 2 s, 4 s…).
	for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		got := strings.Join(received, " ")
		mu.Unlock()
		if got == "stop_warning stop" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook received %q after %d attempts, want \"stop_warning stop\"", got, attempts)
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("agent exit %d", code)
	}
	if n := strings.Count(readFile(marker), "\n"); n != 1 {
		t.Errorf("action ran %d times", n)
	}
	if w := strings.TrimSpace(readFile(warned)); !strings.HasPrefix(w, "20") {
		t.Errorf("warn command did not get CONNWATCH_STOP_AT: %q", w)
	}
	var types []string
	f, _ := os.Open(events)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Type string }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Text(), err)
		}
		types = append(types, e.Type)
	}
	if got := strings.Join(types, " "); got != "idle_start stop_warning stop" {
		t.Errorf("events %q", got)
	}
}

func TestAgentRejectsBadSettings(t *testing.T) {
	for _, args := range [][]string{
		{"agent", "--period", "1s", "--idle-after", "1500ms"},
		{"agent", "--action", "explode"},
		{"agent", "--config", "/nonexistent/connwatch.toml"},
	} {
		code, _, stderr := runCLI(t, args)
		if code == exitOK || stderr == "" {
			t.Errorf("%v: exit %d stderr %q", args, code, stderr)
		}
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
