package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/sink/notify"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
)

// notifySink is a notification sink: it delivers outbox records.
type notifySink interface {
	Name() string
	Deliver(ctx context.Context, recs []outbox.Record) (int, error)
}

// sinkSet is the configured notification sinks, each behind its outbox.
type sinkSet struct {
	publisher *notify.Publisher
	boxes     []*outbox.Outbox
	sinks     []notifySink
}

// openSinks builds the sinks the configuration names and opens their
// outboxes under the spool directory.
func openSinks(ctx context.Context, cfg config.Agent, log *slog.Logger) (*sinkSet, error) {
	n := cfg.Notify
	filter, err := notify.ParseFilter(n.Events)
	if err != nil {
		return nil, usageError{fmt.Errorf("--notify-events: %w", err)}
	}
	var sinks []notifySink
	if n.Webhook != "" || n.WebhookURLFile != "" {
		w, err := notify.NewWebhook(notify.WebhookOptions{URL: n.Webhook, URLFile: n.WebhookURLFile, Slack: n.WebhookSlack, Logger: log})
		if err != nil {
			return nil, usageError{err}
		}
		sinks = append(sinks, w)
	}
	if n.SNSTopic != "" {
		s, err := notify.NewSNS(ctx, notify.SNSOptions{TopicARN: n.SNSTopic})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	if n.Command != "" {
		c, err := notify.NewCommand(notify.CommandOptions{Command: n.Command})
		if err != nil {
			return nil, usageError{err}
		}
		sinks = append(sinks, c)
	}
	host, _ := os.Hostname()
	set := &sinkSet{publisher: &notify.Publisher{Host: host}, sinks: sinks}
	spool := n.SpoolDir
	if spool == "" {
		spool = filepath.Join(cfg.StateDir, "spool")
	}
	for _, s := range sinks {
		box, err := outbox.Open(spool, s.Name(), outbox.Options{Logger: log.With("sink", s.Name()), MaxAge: 7 * 24 * time.Hour})
		if err != nil {
			set.close()
			return nil, fmt.Errorf("open outbox of %s: %w", s.Name(), err)
		}
		set.boxes = append(set.boxes, box)
		set.publisher.Routes = append(set.publisher.Routes, notify.Route{Name: s.Name(), Filter: filter, Queue: box})
		log.Info("notifications on", "sink", s.Name(), "events", filter.String(), "spool", filepath.Join(spool, s.Name()))
	}
	return set, nil
}

// runs returns one delivery loop per sink; each reports to metrics.
func (s *sinkSet) runs(metrics *promsink.Metrics) []func(ctx context.Context) error {
	var out []func(ctx context.Context) error
	for i, box := range s.boxes {
		sink := s.sinks[i]
		deliver := sink.Deliver
		if metrics != nil {
			deliver = func(ctx context.Context, recs []outbox.Record) (int, error) {
				began := time.Now()
				n, err := sink.Deliver(ctx, recs)
				metrics.ObserveSink(sink.Name(), time.Since(began), err, box.Stats().Pending-n)
				return n, err
			}
		}
		out = append(out, func(ctx context.Context) error { return box.Run(ctx, deliver) })
	}
	return out
}

// reload has the sinks that read files at start (the webhook's URL
// file) read them again; a sink that fails keeps what it had.
func (s *sinkSet) reload(log *slog.Logger) {
	for _, sink := range s.sinks {
		if r, ok := sink.(interface{ Reload() error }); ok {
			if err := r.Reload(); err != nil {
				log.Error("reload failed; the sink keeps its old settings", "sink", sink.Name(), "err", err)
			}
		}
	}
}

func (s *sinkSet) close() {
	for _, b := range s.boxes {
		b.Close()
	}
}

// eventFanout writes every event to the events stream and the
// notification outboxes. An outbox that cannot take an event is logged by
// the agent; the stream still gets it.
type eventFanout struct {
	stream    *event.Writer
	publisher *notify.Publisher
}

func (f eventFanout) Write(e event.Event) error {
	err := f.stream.Write(e)
	if perr := f.publisher.Write(e); perr != nil {
		return fmt.Errorf("queue notification: %w", perr)
	}
	return err
}
