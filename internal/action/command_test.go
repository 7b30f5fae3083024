package action_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/action"
)

func TestCommandEnvironment(t *testing.T) {
	t.Setenv("CONNWATCH_TEST_INHERITED", "yes")
	t.Setenv("CONNWATCH_REASON", "stale value from the agent's environment")
	out := filepath.Join(t.TempDir(), "env")
	c := &action.Command{Command: `printf '%s\n' "$CONNWATCH_REASON" "$CONNWATCH_IDLE_SINCE" "$CONNWATCH_ACTION" "$CONNWATCH_TEST_INHERITED" > "` + out + `"; echo done; echo stopping the machine`}
	r := action.Request{
		Reason:    "no SSH session for 15m0s; last: alice from 203.0.113.5",
		IdleSince: time.Date(2026, 3, 1, 13, 4, 5, 0, time.FixedZone("CET", 3600)),
	}
	res, err := c.Do(t.Context(), r)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "no SSH session for 15m0s; last: alice from 203.0.113.5\n2026-03-01T12:04:05Z\ncommand\nyes\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("environment seen by the command (-want +got):\n%s", diff)
	}
	if !strings.HasSuffix(res.Summary, ": stopping the machine") || res.Action != "command" {
		t.Errorf("result %+v, want the last line of stdout in the summary", res)
	}
}

func TestCommandFailure(t *testing.T) {
	c := &action.Command{Command: "echo starting; echo first problem >&2; echo cannot reach hook server >&2; exit 3"}
	_, err := c.Do(t.Context(), action.Request{})
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("Do = %v, want exit status 3", err)
	}
	if !strings.HasSuffix(err.Error(), "exit status 3: first problem | cannot reach hook server") {
		t.Errorf("error %q, want the stderr tail and not stdout", err)
	}
}

func TestCommandTimeout(t *testing.T) {
	// The background sleep keeps the output pipe open: only killing the
	// whole process group lets Do return promptly.
	c := &action.Command{Command: "sleep 30 & echo waiting >&2; sleep 30", Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := c.Do(t.Context(), action.Request{})
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Do took %s, want about the 200ms timeout", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed after 200ms") || !strings.Contains(err.Error(), "waiting") {
		t.Errorf("Do = %v, want a timeout error with the stderr tail", err)
	}
}

func TestCommandCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := (&action.Command{Command: "sleep 30"}).Do(ctx, action.Request{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Do with a canceled context = %v, want context.Canceled", err)
	}
}

// TestCommandKeepsArgumentsOut: the result becomes the stop event's
// reason (events file, log, notifications) and the error the stop_failed
// one; a token in the command line must reach neither.
func TestCommandKeepsArgumentsOut(t *testing.T) {
	const token = "s3cr3t-bearer-token"
	ok := &action.Command{Command: `/bin/echo stopping >/dev/null; echo "stop requested" # curl -H "Authorization: Bearer ` + token + `"`}
	res, err := ok.Do(t.Context(), action.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "ran the configured command (/bin/echo): stop requested"; res.Summary != want {
		t.Errorf("summary %q, want %q", res.Summary, want)
	}
	for _, c := range []*action.Command{
		{Command: `exit 3 # Bearer ` + token},
		{Command: `TOKEN=` + token + ` sh -c 'exit 4'`},
		{Command: `sleep 5 # ` + token, Timeout: 50 * time.Millisecond},
	} {
		_, err := c.Do(t.Context(), action.Request{})
		if err == nil || strings.Contains(err.Error(), token) || !strings.HasPrefix(err.Error(), "run the configured command") {
			t.Errorf("Do(%q) error %v, want one that does not show the command", c.Command, err)
		}
	}
}
