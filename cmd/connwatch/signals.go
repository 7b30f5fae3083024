package main

import (
	"context"
	"log/slog"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/source/sshd"
)

// fastSignal watches for something that means connections may have
// changed, calling kick each time, until ctx ends.
type fastSignal func(ctx context.Context, kick func()) error

// signals returns the fast signals available here.
func signals(cfg config.Agent, src *sshd.Source, log *slog.Logger) []fastSignal {
	return nil
}
