package action

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	for _, w := range []string{"abc", "defgh", "ij", strings.Repeat("x", 20) + "12345678", "9"} {
		if n, err := tb.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := string(tb.b); got != "23456789" {
		t.Errorf("tail = %q, want %q", got, "23456789")
	}
	tb = &tailBuffer{max: 8}
	_, _ = tb.Write([]byte("abc"))
	_, _ = tb.Write([]byte("defghij"))
	if got := string(tb.b); got != "cdefghij" {
		t.Errorf("tail = %q, want %q", got, "cdefghij")
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\n\nb\n  c  \n\n"), 2); got != "b | c" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines(nil, 3); got != "" {
		t.Errorf("lastLines(nil) = %q", got)
	}
}
