package netnstest

import (
	"strings"
	"testing"
)

func TestTwoNamespacesTalk(t *testing.T) {
	a, b := New(t), New(t)
	aAddr, bAddr := a.Link(t, b)
	out := a.Run(t, "ping", "-c", "1", "-W", "2", bAddr)
	if !strings.Contains(out, "1 received") {
		t.Fatalf("ping %s from %s: %s", bAddr, aAddr, out)
	}
	out = Run(t, "", "ping", "-c", "1", "-W", "2", a.Addr)
	if !strings.Contains(out, "1 received") {
		t.Fatalf("ping %s from the root namespace: %s", a.Addr, out)
	}
}
