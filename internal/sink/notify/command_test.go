package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

func TestCommandHook(t *testing.T) {
	out := filepath.Join(t.TempDir(), "events")
	c, err := notify.NewCommand(notify.CommandOptions{
		// One line per event: type, key, then the JSON.
		Command: `printf '%s %s %s\n' "$CONNWATCH_EVENT_TYPE" "$CONNWATCH_KEY" "$CONNWATCH_EVENT" >> "$OUT"`,
		Env:     []string{"OUT=" + out, "PATH=/usr/bin:/bin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var recs []outbox.Record
	events := sessionEvents()
	for i, e := range events {
		recs = append(recs, record(t, uint64(i+1), e))
	}
	if n, err := c.Deliver(context.Background(), recs); n != 3 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("hook wrote %q", b)
	}
	for i, l := range lines {
		typ, rest, _ := strings.Cut(l, " ")
		key, js, _ := strings.Cut(rest, " ")
		want := msg(events[i])
		if typ != string(want.Event.Type) || key != want.Key {
			t.Errorf("line %d: type %q key %q", i, typ, key)
		}
		var got notify.Message
		if err := json.Unmarshal([]byte(js), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("line %d (-want +got):\n%s", i, diff)
		}
	}
}

func TestCommandHookFailureIsRetried(t *testing.T) {
	c, _ := notify.NewCommand(notify.CommandOptions{Command: `echo "no route to pager" >&2; exit 3`})
	n, err := c.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0]), record(t, 2, sessionEvents()[1])})
	if n != 0 || err == nil || errors.Is(err, outbox.ErrPermanent) ||
		!strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "no route to pager") {
		t.Errorf("Deliver: %d, %v", n, err)
	}
}

func TestCommandHookTimeout(t *testing.T) {
	c, _ := notify.NewCommand(notify.CommandOptions{Command: `sleep 30 & wait`, Timeout: 100 * time.Millisecond})
	begin := time.Now()
	_, err := c.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
	if err == nil || !strings.Contains(err.Error(), "killed after 100ms") || errors.Is(err, outbox.ErrPermanent) {
		t.Errorf("Deliver: %v", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("took %s: the hook's children were not killed", d)
	}
}

func TestNewCommandChecks(t *testing.T) {
	if _, err := notify.NewCommand(notify.CommandOptions{Command: "  "}); !errors.Is(err, notify.ErrInvalidConfig) {
		t.Errorf("empty command: %v", err)
	}
	if _, err := notify.NewCommand(notify.CommandOptions{Command: "true", Timeout: -1}); !errors.Is(err, notify.ErrInvalidConfig) {
		t.Errorf("negative timeout: %v", err)
	}
}

// TestCommandHookErrorKeepsArgumentsOut: delivery errors are logged and
// kept in the outbox's stats; a token in the command line must not be.
func TestCommandHookErrorKeepsArgumentsOut(t *testing.T) {
	const token = "s3cr3t-bearer-token"
	for _, o := range []notify.CommandOptions{
		{Command: `curl --fail -H "Authorization: Bearer ` + token + `" http://127.0.0.1:1/ 2>/dev/null || exit 7`},
		{Command: `sleep 5 # ` + token, Timeout: 50 * time.Millisecond},
	} {
		c, err := notify.NewCommand(o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
		if err == nil || strings.Contains(err.Error(), token) || !strings.HasPrefix(err.Error(), "run hook (") {
			t.Errorf("Deliver error %v, want one naming the hook's program only", err)
		}
	}
}
