package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/outbox/outboxtest"
	"github.com/connwatch/connwatch/internal/secret"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

// hook is a webhook receiver on loopback. status decides the answer to
// the n-th request (from 1); nil means 200.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []hookRequest
	status func(n int) int
}

type hookRequest struct {
	header http.Header
	body   []byte
	status int
}

func newHook(t *testing.T, status func(n int) int) *hook {
	h := &hook{status: status}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		code := http.StatusOK
		if h.status != nil {
			code = h.status(len(h.reqs) + 1)
		}
		h.reqs = append(h.reqs, hookRequest{r.Header.Clone(), body, code})
		h.mu.Unlock()
		if r.Method != http.MethodPost {
			code = http.StatusMethodNotAllowed
		}
		w.WriteHeader(code)
		io.WriteString(w, http.StatusText(code))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.reqs...)
}

// accepted returns the requests answered 2xx.
func (h *hook) accepted() []hookRequest {
	var out []hookRequest
	for _, r := range h.requests() {
		if r.status < 300 {
			out = append(out, r)
		}
	}
	return out
}

// sessionEvents are a login and a logout a minute apart, then a warning.
func sessionEvents() []event.Event {
	return []event.Event{
		{Time: t0, Type: event.SessionStart, Session: alice},
		{Time: t0.Add(time.Minute), Type: event.SessionEnd, Session: alice},
		{Time: t0.Add(2 * time.Minute), Type: event.StopWarning, StopAt: &stopAt, Reason: "idle"},
	}
}

func record(t *testing.T, seq uint64, e event.Event) outbox.Record {
	m := msg(e)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return outbox.Record{Seq: seq, Key: m.Key, Time: e.Time, Body: b}
}

func openBox(t *testing.T, fake *clock.Fake, name string) *outbox.Outbox {
	t.Helper()
	b, err := outbox.Open(t.TempDir(), name, outbox.Options{Clock: fake, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestWebhookRetriesThenDelivers(t *testing.T) {
	const down = 3
	h := newHook(t, func(n int) int {
		if n <= down {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	w, err := notify.NewWebhook(notify.WebhookOptions{URL: h.URL + "/events", Header: http.Header{"Authorization": {"Bearer s3cret"}}})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(t0)
	box := openBox(t, fake, w.Name())
	pub := &notify.Publisher{Host: "dev-box", InstanceID: "i-0abc", Routes: []notify.Route{{Name: w.Name(), Queue: box}}}
	events := sessionEvents()
	for _, e := range events {
		if err := pub.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	outboxtest.Run(t, box, w.Deliver)
	for range down {
		outboxtest.Skip(t, fake)
	}
	outboxtest.WaitFor(t, "delivery", func() bool { return box.Stats().Delivered == 3 })

	reqs := h.requests()
	if len(reqs) != down+3 {
		t.Fatalf("%d requests, want %d", len(reqs), down+3)
	}
	for i, r := range reqs[:down] {
		if r.header.Get("Idempotency-Key") != notify.Key(events[0]) {
			t.Errorf("retry %d is not of the first event", i+1)
		}
	}
	for i, r := range h.accepted() {
		want := msg(events[i])
		if got := r.header.Get("Idempotency-Key"); got != want.Key {
			t.Errorf("request %d: Idempotency-Key %q, want %q", i, got, want.Key)
		}
		if r.header.Get("Content-Type") != "application/json" || r.header.Get("Authorization") != "Bearer s3cret" {
			t.Errorf("request %d: headers %v", i, r.header)
		}
		var got notify.Message
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatalf("request %d: %v: %s", i, err, r.body)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("request %d body (-want +got):\n%s", i, diff)
		}
	}
	if st := box.Stats(); st.Failed != down || st.Pending != 0 || !strings.Contains(st.LastError, "503 Service Unavailable") {
		t.Errorf("stats %+v", st)
	}
}

func TestWebhookSlack(t *testing.T) {
	h := newHook(t, nil)
	w, err := notify.NewWebhook(notify.WebhookOptions{URL: h.URL, Slack: true})
	if err != nil {
		t.Fatal(err)
	}
	var recs []outbox.Record
	for i, e := range sessionEvents() {
		recs = append(recs, record(t, uint64(i+1), e))
	}
	if n, err := w.Deliver(context.Background(), recs); n != 3 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	var got []string
	for _, r := range h.accepted() {
		var body map[string]string
		if err := json.Unmarshal(r.body, &body); err != nil || len(body) != 1 {
			t.Fatalf("body %s: %v", r.body, err)
		}
		got = append(got, body["text"])
	}
	want := []string{
		"alice connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)",
		"session of alice from 198.51.100.7 port 50122 on dev-box (i-0abc) ended after 1m",
		"dev-box (i-0abc) will be stopped at 12:11 UTC unless someone connects",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("texts (-want +got):\n%s", diff)
	}
}

func TestWebhookStatuses(t *testing.T) {
	for _, tt := range []struct {
		status    int
		ok        bool
		permanent bool
	}{
		{200, true, false},
		{202, true, false},
		{400, false, true},
		{401, false, true},
		{404, false, true},
		{410, false, true},
		{408, false, false},
		{429, false, false},
		{500, false, false},
		{503, false, false},
		{302, false, false},
	} {
		h := newHook(t, func(int) int { return tt.status })
		w, _ := notify.NewWebhook(notify.WebhookOptions{URL: h.URL})
		recs := []outbox.Record{record(t, 1, sessionEvents()[0]), record(t, 2, sessionEvents()[1])}
		n, err := w.Deliver(context.Background(), recs)
		if tt.ok {
			if n != 2 || err != nil {
				t.Errorf("%d: Deliver %d, %v", tt.status, n, err)
			}
			continue
		}
		if n != 0 || err == nil || errors.Is(err, outbox.ErrPermanent) != tt.permanent {
			t.Errorf("%d: Deliver %d, %v; want permanent %v", tt.status, n, err, tt.permanent)
		}
		if len(h.requests()) != 1 {
			t.Errorf("%d: went on after a failure", tt.status)
		}
	}
}

func TestWebhookPermanentFailureIsDropped(t *testing.T) {
	h := newHook(t, func(n int) int {
		if n == 2 {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	w, _ := notify.NewWebhook(notify.WebhookOptions{URL: h.URL})
	fake := clock.NewFake(t0)
	box := openBox(t, fake, w.Name())
	pub := &notify.Publisher{Host: "dev-box", InstanceID: "i-0abc", Routes: []notify.Route{{Queue: box}}}
	for _, e := range sessionEvents() {
		pub.Write(e)
	}
	outboxtest.Run(t, box, w.Deliver)
	outboxtest.WaitFor(t, "delivery", func() bool { return box.Stats().Pending == 0 })
	if st := box.Stats(); st.Delivered != 2 || st.Dropped != 1 || !strings.Contains(st.LastError, "400 Bad Request") {
		t.Errorf("stats %+v", st)
	}
	if n := len(h.requests()); n != 3 {
		t.Errorf("%d requests, want 3 (no retry of the refused one)", n)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	w, _ := notify.NewWebhook(notify.WebhookOptions{URL: srv.URL, Timeout: 50 * time.Millisecond})
	n, err := w.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
	if n != 0 || err == nil || errors.Is(err, outbox.ErrPermanent) || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("Deliver: %d, %v", n, err)
	}
}

func TestWebhookKeepsURLSecret(t *testing.T) {
	h := newHook(t, func(int) int { return http.StatusInternalServerError })
	const secret = "T000/B000/XXXXsecretXXXX"
	w, _ := notify.NewWebhook(notify.WebhookOptions{URL: h.URL + "/services/" + secret, Slack: true})
	_, err := w.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error %v", err)
	}
	h.Close()
	_, err = w.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
	if err == nil || strings.Contains(err.Error(), "secret") || errors.Is(err, outbox.ErrPermanent) {
		t.Errorf("error %v", err)
	}
	if s := w.String(); strings.Contains(s, "secret") {
		t.Errorf("String %q", s)
	}
	_, err = notify.NewWebhook(notify.WebhookOptions{URL: "ftp://example.com/" + secret})
	if !errors.Is(err, notify.ErrInvalidConfig) || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: %v", err)
	}
}

func TestUndecodableRecordIsPermanent(t *testing.T) {
	w, _ := notify.NewWebhook(notify.WebhookOptions{URL: "http://127.0.0.1:1"})
	_, err := w.Deliver(context.Background(), []outbox.Record{{Seq: 1, Key: "k", Body: json.RawMessage(`[1]`)}})
	if !errors.Is(err, outbox.ErrPermanent) {
		t.Errorf("error %v", err)
	}
}

func TestWebhookURLFile(t *testing.T) {
	a, b := newHook(t, nil), newHook(t, nil)
	file := filepath.Join(t.TempDir(), "webhook.url")
	if err := os.WriteFile(file, []byte(a.URL+"/services/T0/B0/secretA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	w, err := notify.NewWebhook(notify.WebhookOptions{URLFile: file, Slack: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])}); n != 1 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	// The URL is rotated: Reload (SIGHUP) picks the new one.
	if err := os.WriteFile(file, []byte(b.URL+"/services/T0/B0/secretB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(file, 0o644) // readable by all: works, with a warning
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Deliver(context.Background(), []outbox.Record{record(t, 2, sessionEvents()[1])}); n != 1 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	if len(a.accepted()) != 1 || len(b.accepted()) != 1 {
		t.Errorf("first URL got %d requests, second %d; want 1 and 1", len(a.accepted()), len(b.accepted()))
	}
	if !strings.Contains(logs.String(), "can be read by every user") || !strings.Contains(logs.String(), file) || strings.Contains(logs.String(), "secret") {
		t.Errorf("want a warning naming the world-readable file, not its URL; log: %s", logs.String())
	}

	// A file others could change is refused; the URL in use stays.
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); !errors.Is(err, secret.ErrUnsafeFile) || !strings.Contains(err.Error(), file) {
		t.Errorf("Reload of a world-writable file: %v", err)
	}
	if s := w.String(); !strings.Contains(s, strings.TrimPrefix(b.URL, "http://")) {
		t.Errorf("after a failed reload the sink is %s, want the second URL's host", s)
	}
	// Not a URL: the error names the file, not what is in it.
	os.WriteFile(file, []byte("ftp://example.com/secretC"), 0o600)
	os.Chmod(file, 0o600)
	if _, err := notify.NewWebhook(notify.WebhookOptions{URLFile: file}); !errors.Is(err, notify.ErrInvalidConfig) || !strings.Contains(err.Error(), file) || strings.Contains(err.Error(), "secret") {
		t.Errorf("NewWebhook with a file holding no http URL: %v", err)
	}
	if _, err := notify.NewWebhook(notify.WebhookOptions{URL: a.URL, URLFile: file}); !errors.Is(err, notify.ErrInvalidConfig) {
		t.Errorf("NewWebhook with URL and URLFile: %v", err)
	}
}
