package action

import (
	"context"
	"time"
)

// DryRun changes nothing: its result says what would have happened.
type DryRun struct {
	// Of names the action this dry run stands in for; empty means
	// powering off.
	Of string
}

var _ Action = DryRun{}

// Name implements Action.
func (DryRun) Name() string { return NameDryRun }

// Do implements Action.
func (d DryRun) Do(_ context.Context, r Request) (Result, error) {
	var would string
	switch d.Of {
	case NameEC2Stop:
		would = "stop this EC2 instance"
	case NameEC2Hibernate:
		would = "hibernate this EC2 instance (or stop it if it cannot hibernate)"
	case NameCommand:
		would = "run the configured command"
	default:
		would = "power off this machine"
	}
	return Result{Action: NameDryRun, Summary: "dry run: would " + would + describe(r)}, nil
}

// describe renders a Request as a suffix: ": REASON (idle since T)".
func describe(r Request) string {
	var s string
	if r.Reason != "" {
		s = ": " + r.Reason
	}
	if !r.IdleSince.IsZero() {
		s += " (idle since " + r.IdleSince.UTC().Format(time.RFC3339) + ")"
	}
	return s
}
