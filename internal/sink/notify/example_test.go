package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

// Wiring a sink: one outbox per sink, named after it, under the spool
// directory; Run delivers in the background while the agent writes events
// to the Publisher.
func Example() {
	ctx := context.Background()
	hook, err := notify.NewWebhook(notify.WebhookOptions{Name: "slack", URL: "https://hooks.slack.com/services/T/B/X", Slack: true})
	if err != nil {
		panic(err)
	}
	filter, err := notify.ParseFilter("session_start,session_end,stop_warning,stop")
	if err != nil {
		panic(err)
	}
	box, err := outbox.Open("/var/spool/connwatch", hook.Name(), outbox.Options{MaxAge: 7 * 24 * time.Hour, Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	defer box.Close()
	go box.Run(ctx, hook.Deliver) // in the agent's run group

	pub := &notify.Publisher{Host: "dev-box", InstanceID: "i-0abc", Routes: []notify.Route{
		{Name: hook.Name(), Filter: filter, Queue: box},
	}}
	_ = pub.Write(event.Event{Time: time.Now(), Type: event.StopWarning})
}

func ExampleText() {
	start := time.Date(2026, 3, 1, 10, 6, 0, 0, time.UTC)
	s := &session.Session{ID: "ssh-1", Kind: session.KindSSH, User: "alice", RemoteAddr: "198.51.100.7",
		RemotePort: 50122, TTY: "pts/0", Mode: session.ModeTTY, StartedAt: start}
	stopAt := start.Add(2*time.Hour + 5*time.Minute)
	for _, e := range []event.Event{
		{Time: start, Type: event.SessionStart, Session: s},
		{Time: start.Add(2*time.Hour + 5*time.Minute), Type: event.SessionEnd, Session: s},
		{Time: start.Add(2 * time.Hour), Type: event.StopWarning, StopAt: &stopAt},
		{Time: stopAt, Type: event.Stop, Action: "ec2-stop", Reason: "stopped i-0abc in eu-west-1 (running -> stopping)"},
	} {
		fmt.Println(notify.Text(notify.NewMessage(e, "dev-box", "i-0abc")))
	}
	// Output:
	// alice connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)
	// session of alice from 198.51.100.7 port 50122 on dev-box (i-0abc) ended after 2h5m
	// dev-box (i-0abc) will be stopped at 12:11 UTC unless someone connects
	// dev-box (i-0abc) was stopped: stopped i-0abc in eu-west-1 (running -> stopping)
}

func ExampleParseFilter() {
	_, err := notify.ParseFilter("session_start,sesion_end")
	fmt.Println(err)
	// Output:
	// parse event filter: unknown event type "sesion_end" (valid: session_start, session_end, idle_start, idle_cancel, stop_warning, stop, stop_failed, blind, sighted)
}
