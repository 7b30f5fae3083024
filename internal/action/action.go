// Package action carries out what the agent does once the machine has been
// idle long enough: nothing but a log line (dry-run), an operating-system
// power-off, an EC2 stop or hibernation of this instance, or a user command.
//
// Every action implements Action. New builds one from its configured name;
// each implementation is a plain struct that tests may also build directly.
// Actions that reach outside the process (exec, the AWS API) are bounded by
// a timeout and add no retries beyond the AWS SDK's standard retryer: the
// caller decides what a failure means.
package action

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
)

// Action is one way of stopping an idle machine.
type Action interface {
	// Name is the configured name, e.g. "ec2-hibernate".
	Name() string
	// Do carries the action out once. A nil error means it was done (or,
	// for a dry run, described) and Result says what happened.
	Do(ctx context.Context, r Request) (Result, error)
}

// Request says why an action is being taken.
type Request struct {
	// Reason is a human-readable explanation, e.g.
	// "no SSH session for 15m0s (alarm ssh-idle in ALARM)".
	Reason string
	// IdleSince is when the machine became idle; zero if unknown.
	IdleSince time.Time
}

// Result says what an action did.
type Result struct {
	// Action is the Name of the action that produced the result.
	Action string
	// Summary is one line for logs and events, e.g.
	// "hibernation not possible (UnsupportedHibernationConfiguration): stopped i-123 in eu-west-1".
	Summary string
}

func (r Result) String() string { return r.Summary }

// Names of the actions New knows.
const (
	NameDryRun       = "dry-run"
	NamePoweroff     = "poweroff"
	NameEC2Stop      = "ec2-stop"
	NameEC2Hibernate = "ec2-hibernate"
	NameCommand      = "command"
)

// Names lists the valid action names, in the order the docs show them.
func Names() []string {
	return []string{NameDryRun, NamePoweroff, NameEC2Stop, NameEC2Hibernate, NameCommand}
}

// DefaultTimeout bounds one Do when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Minute

// Sentinel errors callers can branch on.
var (
	// ErrUnknownAction is returned by New for a name it does not know.
	ErrUnknownAction = errors.New("unknown action")
	// ErrInvalidOptions is returned by New when the options do not fit
	// the action (e.g. "command" without a command).
	ErrInvalidOptions = errors.New("invalid action options")
)

// Options configure the action New builds; each action reads only the
// fields that concern it.
type Options struct {
	// Command is the shell command the "command" action runs with /bin/sh -c.
	Command string
	// Timeout bounds one Do of every action but dry-run; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// DryRunOf names the action a dry run stands in for, so its result can
	// say what would have happened; empty means powering off.
	DryRunOf string
	// AWSConfig are extra options for config.LoadDefaultConfig (ec2-stop,
	// ec2-hibernate). Without them the SDK's standard settings apply: the
	// default credential chain, AWS_ENDPOINT_URL*, AWS_EC2_METADATA_*.
	AWSConfig []func(*config.LoadOptions) error
}

// New returns the action called name.
func New(name string, opts Options) (Action, error) {
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("action %s: negative timeout %s: %w", name, opts.Timeout, ErrInvalidOptions)
	}
	switch name {
	case NameDryRun:
		if opts.DryRunOf == NameDryRun {
			return nil, fmt.Errorf("action %s: dry run of %q: %w", name, opts.DryRunOf, ErrInvalidOptions)
		}
		if opts.DryRunOf != "" && !isName(opts.DryRunOf) {
			return nil, fmt.Errorf("action %s: dry run of %q: %w (want one of %s)", name, opts.DryRunOf, ErrUnknownAction, strings.Join(Names(), ", "))
		}
		return DryRun{Of: opts.DryRunOf}, nil
	case NamePoweroff:
		return &Poweroff{Timeout: opts.Timeout}, nil
	case NameEC2Stop:
		return &EC2Stop{AWSConfig: opts.AWSConfig, Timeout: opts.Timeout}, nil
	case NameEC2Hibernate:
		return &EC2Hibernate{AWSConfig: opts.AWSConfig, Timeout: opts.Timeout}, nil
	case NameCommand:
		if strings.TrimSpace(opts.Command) == "" {
			return nil, fmt.Errorf("action %s: empty command: %w", name, ErrInvalidOptions)
		}
		return &Command{Command: opts.Command, Timeout: opts.Timeout}, nil
	}
	return nil, fmt.Errorf("action %q: %w (want one of %s)", name, ErrUnknownAction, strings.Join(Names(), ", "))
}

func isName(name string) bool { return slices.Contains(Names(), name) }

// timeoutOr returns d, or DefaultTimeout when d is zero.
func timeoutOr(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultTimeout
	}
	return d
}
