package notify_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox/outboxtest"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

// receiver is a webhook receiver on a fixed loopback address that can be
// taken down and brought back.
type receiver struct {
	addr string
	mu   sync.Mutex
	got  []notify.Message
	hang chan struct{} // while open, requests wait for it to close
	srv  *http.Server
}

func (r *receiver) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatalf("listen %s: %v", r.addr, err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		hang := r.hang
		r.mu.Unlock()
		if hang != nil {
			<-hang
		}
		var m notify.Message
		body, _ := io.ReadAll(req.Body)
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, m)
		r.mu.Unlock()
	})}
	go r.srv.Serve(ln)
}

func (r *receiver) down() { r.srv.Close() }

func (r *receiver) messages() []notify.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Message(nil), r.got...)
}

// TestOutage takes a webhook receiver down, then makes it hang, then
// brings it back, while events keep coming: the events are queued without
// delay, a second, healthy sink gets each one at once, and in the end the
// first receiver has every event, once, in order, with its own time.
func TestOutage(t *testing.T) {
	flaky := &receiver{addr: "127.0.0.1:0"}
	flaky.up(t)
	defer func() { flaky.down() }()
	healthy := newHook(t, nil)

	fake := clock.NewFake(t0)
	flakyHook, _ := notify.NewWebhook(notify.WebhookOptions{Name: "flaky", URL: "http://" + flaky.addr + "/hook", Timeout: time.Minute})
	healthyHook, _ := notify.NewWebhook(notify.WebhookOptions{Name: "healthy", URL: healthy.URL})
	flakyBox, healthyBox := openBox(t, fake, "flaky"), openBox(t, fake, "healthy")
	outboxtest.Run(t, flakyBox, flakyHook.Deliver)
	outboxtest.Run(t, healthyBox, healthyHook.Deliver)
	pub := &notify.Publisher{Host: "dev-box", InstanceID: "i-0abc", Routes: []notify.Route{
		{Name: "flaky", Queue: flakyBox}, {Name: "healthy", Queue: healthyBox},
	}}

	var events []event.Event
	var slowest time.Duration
	publish := func(n int) {
		t.Helper()
		for range n {
			i := len(events)
			s := *alice
			s.ID = alice.ID + "-" + string(rune('a'+i%26))
			e := event.Event{Time: t0.Add(time.Duration(i) * time.Second), Type: event.SessionStart, Session: &s}
			events = append(events, e)
			begin := time.Now()
			if err := pub.Write(e); err != nil {
				t.Fatalf("Write: %v", err)
			}
			slowest = max(slowest, time.Since(begin))
		}
		outboxtest.WaitFor(t, "the healthy sink", func() bool { return healthyBox.Stats().Delivered == uint64(len(events)) })
	}

	publish(1)
	outboxtest.WaitFor(t, "the first delivery", func() bool { return flakyBox.Stats().Delivered == 1 })

	// Down: connections are refused; the outbox backs off.
	flaky.down()
	for range 5 {
		publish(4)
		outboxtest.Skip(t, fake)
	}
	if st := flakyBox.Stats(); st.Pending != 20 || st.Failed < 5 || !st.OldestPending.Equal(events[1].Time) {
		t.Errorf("during the outage: %+v", st)
	}

	outboxtest.NextTimer(t, fake) // the last retry failed while down

	// Hanging: the receiver accepts and never answers (until released).
	release := make(chan struct{})
	flaky.mu.Lock()
	flaky.hang = release
	flaky.mu.Unlock()
	flaky.up(t)
	outboxtest.Skip(t, fake) // the retry that hangs
	publish(5)

	// Back.
	close(release)
	outboxtest.WaitFor(t, "the backlog", func() bool { return flakyBox.Stats().Pending == 0 })

	var want []notify.Message
	for _, e := range events {
		want = append(want, msg(e))
	}
	if diff := cmp.Diff(want, flaky.messages()); diff != "" {
		t.Errorf("flaky receiver got (-want +got):\n%s", diff)
	}
	var got []notify.Message
	for _, r := range healthy.accepted() {
		var m notify.Message
		json.Unmarshal(r.body, &m)
		got = append(got, m)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("healthy receiver got (-want +got):\n%s", diff)
	}
	t.Logf("slowest Write (two fsync'd enqueues): %s", slowest)
	if slowest > time.Second {
		t.Errorf("a Write took %s", slowest)
	}
}
