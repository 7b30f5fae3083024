package action

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// Runner runs a program and returns its combined output. It is where the
// poweroff action meets the operating system, so that tests can put a
// Runner that records argv in its place and never power the machine off.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// ExecRunner is the Runner that really executes argv[0].
type ExecRunner struct{}

var _ Runner = ExecRunner{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A child that keeps the output pipe open must not hold Run past
	// the context.
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

// lastLines returns up to n trailing non-empty lines of out, joined with
// " | " so that an error stays on one log line.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append([]string{l}, keep...)
		}
	}
	return strings.Join(keep, " | ")
}
