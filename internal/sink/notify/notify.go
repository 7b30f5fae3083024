// Package notify tells people about events: it posts them to a webhook
// (plain JSON or Slack), publishes them to an SNS topic, or runs a command
// hook. Each sink sits behind its own durable outbox (package outbox), so a
// slow or dead sink never delays the agent or the other sinks:
//
//	box, _ := outbox.Open(spoolDir, hook.Name(), outbox.Options{...})
//	go box.Run(ctx, hook.Deliver)
//	pub := &notify.Publisher{Host: host, InstanceID: id,
//		Routes: []notify.Route{{Queue: box, Filter: filter}}}
//	pub.Write(e) // for every event; enqueues, never waits for the sink
//
// What travels through the outbox is a Message: the event, the machine it
// happened on, and an idempotency key that stays the same however often
// the message is delivered. Each sink's Format is a pure function from a
// Message to what it sends.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox"
)

// Message is one event as sinks send it.
type Message struct {
	Event event.Event
	// Host is the machine's host name.
	Host string
	// InstanceID is the EC2 instance id; empty off EC2.
	InstanceID string
	// Key is the idempotency key, Key(Event).
	Key string
}

// NewMessage returns the Message for e on this machine.
func NewMessage(e event.Event, host, instanceID string) Message {
	return Message{Event: e, Host: host, InstanceID: instanceID, Key: Key(e)}
}

// messageJSON is the wire form of a Message: the event's fields with the
// machine and the key beside them.
type messageJSON struct {
	event.Event
	Host       string `json:"host"`
	InstanceID string `json:"instance_id,omitempty"`
	Key        string `json:"key"`
}

// MarshalJSON encodes m as one flat object:
//
//	{"time":…,"type":"session_start","session":{…},"host":"dev-box","instance_id":"i-0abc","key":"…"}
func (m Message) MarshalJSON() ([]byte, error) {
	return json.Marshal(messageJSON{m.Event, m.Host, m.InstanceID, m.Key})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (m *Message) UnmarshalJSON(b []byte) error {
	var w messageJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*m = Message{Event: w.Event, Host: w.Host, InstanceID: w.InstanceID, Key: w.Key}
	return nil
}

// Key returns e's idempotency key: the hex SHA-256 of its type, session
// id, time (RFC 3339 with nanoseconds, UTC), reason, action and stop time.
// The same event always has the same key, wherever and however often it
// is computed; receivers use it to drop repeated deliveries.
func Key(e event.Event) string {
	h := sha256.New()
	field := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	field(string(e.Type))
	if e.Session != nil {
		field(e.Session.ID)
	} else {
		field("")
	}
	field(e.Time.UTC().Format(time.RFC3339Nano))
	field(e.Reason)
	field(e.Action)
	if e.StopAt != nil {
		field(e.StopAt.UTC().Format(time.RFC3339Nano))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Queue is where a Publisher puts messages: an *outbox.Outbox.
type Queue interface {
	Enqueue(key string, t time.Time, body any) error
}

// Route sends the events its Filter matches to a Queue.
type Route struct {
	// Name names the route in errors; usually the sink's name.
	Name   string
	Filter Filter
	Queue  Queue
}

// Publisher turns events into Messages and enqueues each into every route
// whose filter matches. It has the agent's event sink method, Write.
type Publisher struct {
	Host, InstanceID string
	Routes           []Route
}

// Write enqueues e for the matching routes. It returns once the message is
// on disk, never waiting for a sink; an error names the routes that could
// not take it, the others have it.
func (p *Publisher) Write(e event.Event) error {
	m := NewMessage(e, p.Host, p.InstanceID)
	var errs []error
	for _, r := range p.Routes {
		if !r.Filter.Match(e.Type) {
			continue
		}
		if err := r.Queue.Enqueue(m.Key, e.Time, m); err != nil {
			errs = append(errs, fmt.Errorf("queue %s event for %s: %w", e.Type, r.Name, err))
		}
	}
	return errors.Join(errs...)
}

// deliverEach decodes recs and sends them one at a time with send, which
// is how every sink here delivers: it returns how many were sent before
// the first failure. A record that does not decode can never be sent.
func deliverEach(ctx context.Context, recs []outbox.Record, send func(context.Context, Message) error) (int, error) {
	for i, r := range recs {
		var m Message
		if err := json.Unmarshal(r.Body, &m); err != nil {
			return i, fmt.Errorf("decode message %s: %w (%w)", r.Key, err, outbox.ErrPermanent)
		}
		if m.Key == "" {
			m.Key = r.Key
		}
		if err := send(ctx, m); err != nil {
			return i, err
		}
	}
	return len(recs), nil
}

// oneLine collapses runs of white space, newlines included, to one space
// and cuts s to at most max bytes (on a rune boundary), for error messages
// quoting what a server said.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
