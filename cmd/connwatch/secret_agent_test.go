package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
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

// TestAgentWebhookURLFile runs the real agent with --webhook-url-file:
// the Slack URL (a secret) is not on its command line for ps to show, it
// posts there, and after the file is rewritten and the agent gets SIGHUP
// it posts to the new URL.
func TestAgentWebhookURLFile(t *testing.T) {
	type receiver struct {
		*httptest.Server
		mu    sync.Mutex
		types []string
	}
	newReceiver := func() *receiver {
		r := &receiver{}
		r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			var m struct{ Type string }
			json.NewDecoder(req.Body).Decode(&m)
			r.mu.Lock()
			r.types = append(r.types, m.Type)
			r.mu.Unlock()
		}))
		t.Cleanup(r.Close)
		return r
	}
	got := func(r *receiver) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return strings.Join(r.types, " ")
	}
	first, second := newReceiver(), newReceiver()
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "webhook.url")
	if err := os.WriteFile(urlFile, []byte(first.URL+"/services/T0/B0/XXXXfirstXXXX\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(dir, "events.jsonl")
	cmd := connwatchCmd(t, "agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"), "--events", events,
		"--period", "1s", "--idle-after", "4s", "--boot-grace", "0", "--warn-before", "1s", "--wall=false", "--metrics-addr", "", "--sshd-log", "",
		"--webhook-url-file", urlFile, "--notify-events", "idle_start,stop_warning,stop", "--log-level", "debug")
	var stderr testproc.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})
	if argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); err != nil || bytes.Contains(argv, []byte("XXXX")) {
		t.Errorf("the agent's command line (%v) shows the URL: %q", err, argv)
	}
	for deadline := time.Now().Add(5 * time.Second); got(first) != "idle_start"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first URL got %q, want idle_start", got(first))
		}
	}
	if err := os.WriteFile(urlFile, []byte(second.URL+"/services/T0/B0/XXXXsecondXXXX\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); got(second) != "stop_warning stop"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the second URL got %q, want stop_warning stop (the first got %q)", got(second), got(first))
		}
	}
	if got(first) != "idle_start" {
		t.Errorf("the first URL got %q after SIGHUP", got(first))
	}
	// Ready, and again after the reload, the agent gave back the pages
	// of its binary that starting (reloading) mapped.
	if n := strings.Count(stderr.String(), "gave back start-up pages"); n != 2 {
		t.Errorf("the agent says %d times that it gave back its start-up pages, want 2 (ready, reload)", n)
	}
	if strings.Contains(stderr.String(), "XXXX") || strings.Contains(readFile(events), "XXXX") {
		t.Errorf("the log or the events show the URL:\n%s", stderr.String())
	}
}

// TestAgentRefusesUnsafeWebhookURLFile: a URL file its group or others
// can write would let them redirect every notification: the agent does
// not start, and says which file.
func TestAgentRefusesUnsafeWebhookURLFile(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "webhook.url")
	os.WriteFile(urlFile, []byte("https://hooks.example.com/XXXXtokenXXXX\n"), 0o600)
	os.Chmod(urlFile, 0o664)
	code, _, stderr := runCLI(t, []string{"agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"), "--events", filepath.Join(dir, "events"),
		"--metrics-addr", "", "--sshd-log", "", "--webhook-url-file", urlFile})
	if code == exitOK || !strings.Contains(stderr, urlFile) || !strings.Contains(stderr, "lets others change it") || strings.Contains(stderr, "XXXX") {
		t.Errorf("exit %d, stderr %q: want a refusal naming the file, not its content", code, stderr)
	}
	if code, _, stderr := runCLI(t, []string{"agent", "--webhook", "https://hooks.example.com/x", "--webhook-url-file", urlFile}); code != exitUsage || !strings.Contains(stderr, "not both") {
		t.Errorf("both flags: exit %d, stderr %q", code, stderr)
	}
}
