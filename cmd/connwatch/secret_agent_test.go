package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAgentKeepsCommandSecretsOut: a bearer token in --action-command
// (and in the warn and notification hooks) reaches neither the events
// file, nor the log, nor the notifications, whether the command fails or
// succeeds.
func TestAgentKeepsCommandSecretsOut(t *testing.T) {
	const token = "s3cr3t-bearer-token"
	dir := t.TempDir()
	proc := emptyProc(t, dir)
	events := filepath.Join(dir, "events.jsonl")
	marker := filepath.Join(dir, "tried")
	// Fails the first time (stop_failed), succeeds the second (stop).
	actionCmd := `if [ -e ` + marker + ` ]; then echo stopped; else touch ` + marker + `; echo "no route to host" >&2; exit 3; fi # curl -H "Authorization: Bearer ` + token + `"`

	var (
		mu     sync.Mutex
		bodies []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer hook.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stderr string
	done := make(chan int, 1)
	go func() {
		var code int
		code, _, stderr = runCLIContext(ctx, []string{"agent", "--proc", proc, "--state-dir", filepath.Join(dir, "state"),
			"--events", events, "--period", "1s", "--idle-after", "2s", "--boot-grace", "0", "--warn-before", "1s",
			"--action", "command", "--action-command", actionCmd, "--wall=false", "--metrics-addr", "", "--sshd-log", "",
			"--warn-command", "exit 5 # " + token, "--notify-command", "exit 6 # " + token,
			"--webhook", hook.URL, "--notify-events", "stop_warning,stop,stop_failed"})
		done <- code
	}()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(bodies)
		mu.Unlock()
		if n >= 3 && strings.Contains(readFile(events), `"type":"stop"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stop_warning, stop_failed and stop delivered; events:\n%s", readFile(events))
		}
	}
	time.Sleep(500 * time.Millisecond) // the hook runs and fails
	cancel()
	<-done

	ev := readFile(events)
	for _, want := range []string{`"type":"stop_failed","reason":"run the configured command: exit status 3: no route to host (attempt 1 of 3;`, `"type":"stop","reason":"ran the configured command: stopped"`} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %s:\n%s", want, ev)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for what, s := range map[string]string{"events": ev, "log": stderr, "webhook": strings.Join(bodies, "\n")} {
		if strings.Contains(s, token) {
			t.Errorf("the %s shows the command's token:\n%s", what, s)
		}
	}
	for _, want := range []string{"run warn command: exit status 5", "run hook: exit status 6"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, stderr)
		}
	}
}
