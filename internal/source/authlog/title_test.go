package authlog_test

import (
	"testing"

	"github.com/connwatch/connwatch/internal/source/authlog"
)

func TestLogFileFromListener(t *testing.T) {
	for _, tc := range []struct {
		title string
		want  string
		ok    bool
	}{
		// The listener of internal/testkit/sshdtest, as ps shows it (OpenSSH 9.2).
		{"sshd: /usr/sbin/sshd -D -f /tmp/TestCaptureE1/001/sshd_config -E /tmp/TestCaptureE1/001/sshd.log [listener] 0 of 100-100 startups", "/tmp/TestCaptureE1/001/sshd.log", true},
		{"sshd: /usr/sbin/sshd -D -f /etc/x -E /var/log/sshd.log [listener] 0 of 10-100 startups", "/var/log/sshd.log", true},
		{"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "", false},
		{"sshd: /usr/sbin/sshd -D -e [listener] 2 of 10-100 startups", "", false},
		// getopt forms.
		{"sshd: /usr/sbin/sshd -DE /var/log/a.log [listener] 0 of 10-100 startups", "/var/log/a.log", true},
		{"sshd: /usr/sbin/sshd -E/var/log/b.log -D [listener] 0 of 10-100 startups", "/var/log/b.log", true},
		{"sshd: /usr/sbin/sshd -E first.log -E /var/log/last.log [listener] 0 of 10-100 startups", "/var/log/last.log", true},
		{"sshd: /usr/sbin/sshd -o LogLevel=VERBOSE -E rel.log [listener] 0 of 10-100 startups", "rel.log", true},
		// An -E inside an option argument is not an option.
		{"sshd: /usr/sbin/sshd -f -E -D [listener] 0 of 10-100 startups", "", false},
		{"sshd: /usr/sbin/sshd -o -E [listener] 0 of 10-100 startups", "", false},
		{"sshd: /usr/sbin/sshd -D -- -E x [listener] 0 of 10-100 startups", "", false},
		{"sshd: /usr/sbin/sshd -D -E [listener] 0 of 10-100 startups", "", false},
		// Not listeners.
		{"sshd: cwtest [priv]", "", false},
		{"sshd-session: cwtest@pts/0", "", false},
		{"/usr/sbin/sshd -D -E /var/log/sshd.log", "", false},
		{"", "", false},
	} {
		got, ok := authlog.LogFileFromListener(tc.title)
		if got != tc.want || ok != tc.ok {
			t.Errorf("LogFileFromListener(%q) = %q, %v; want %q, %v", tc.title, got, ok, tc.want, tc.ok)
		}
	}
}
