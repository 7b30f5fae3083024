//go:build !manpages

package main

import (
	"strings"
	"testing"
)

// Without -tags manpages, man says how to get the pages.
func TestManWithoutGenerator(t *testing.T) {
	if code, _, stderr := runCLI(t, []string{"man", t.TempDir()}); code == exitOK || !strings.Contains(stderr, "-tags manpages") {
		t.Errorf("man without the generator: exit %d, stderr %q; want an error naming -tags manpages", code, stderr)
	}
}
