package testproc_test

import (
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

func TestHostileUser(t *testing.T) {
	u := testproc.HostileUser(t)
	if u.UID == 0 || u.Name != testproc.HostileUserName {
		t.Fatalf("hostile user %+v", u)
	}
	if got := strings.TrimSpace(u.Run(t, "id -u")); got == "0" {
		t.Fatalf("runs as root: id -u = %s", got)
	}
}
