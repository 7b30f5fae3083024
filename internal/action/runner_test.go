package action

import "testing"

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\n\nb\n  c  \n\n"), 2); got != "b | c" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines(nil, 3); got != "" {
		t.Errorf("lastLines(nil) = %q", got)
	}
}
