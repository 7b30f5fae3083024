package authlog_test

import (
	"testing"

	"github.com/connwatch/connwatch/internal/source/authlog"
)

func BenchmarkParseLine(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"E-accepted", "Accepted publickey for cwtest from 127.0.0.1 port 52312 ssh2: ED25519 SHA256:5LOreUm2mu9w+jboJhEysUnGqpIj45Gz8ymcL9PIoig\r\n"},
		{"E-preauth", "Connection closed by authenticating user root 127.0.0.1 port 43520 [preauth]\r\n"},
		{"E-ignored", "Received disconnect from 127.0.0.1 port 52312:11: disconnected by user\r\n"},
		{"syslog-failed", "Nov 22 00:03:14 vm sshd[3539]: Failed password for cwtest from 127.0.0.1 port 55196 ssh2"},
		{"syslog-other", "Nov 22 00:17:01 vm CRON[4242]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"},
		{"rfc3339-accepted", "2026-11-22T00:03:00.653500+00:00 vm sshd[2883]: Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2: ED25519 SHA256:B9RnCJNnUpIpZXR2sC3ssyWCt4LlrkfNpdackqRBmAQ"},
		{"json-accepted", jsonAccepted},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				authlog.ParseLine(bc.line, now)
			}
		})
	}
}
