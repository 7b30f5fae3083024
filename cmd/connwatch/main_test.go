package main

import (
	"bytes"
	"context"
	"testing"
)

// runCLI runs connwatch as the binary does and returns its exit code and
// output.
func runCLI(t *testing.T, args []string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIContext(context.Background(), args)
}

func runCLIContext(ctx context.Context, args []string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"status", "--nope"}, {"status", "extra"}} {
		code, _, stderr := runCLI(t, args)
		if code != exitUsage || stderr == "" {
			t.Errorf("%v: exit %d stderr %q, want %d with a message", args, code, stderr, exitUsage)
		}
	}
	code, stdout, _ := runCLI(t, []string{"--help"})
	if code != exitOK || !bytes.Contains([]byte(stdout), []byte("status")) {
		t.Errorf("--help: exit %d, printed %q", code, stdout)
	}
}
