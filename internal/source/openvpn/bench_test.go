package openvpn

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// bigStatus3 is a "status 3" answer shaped like the captured one
// (testdata/management-status3.txt), with n clients and their routes.
func bigStatus3(n int) []byte {
	var b bytes.Buffer
	b.WriteString("TITLE\t" + title26 + "\r\nTIME\t2026-11-22 02:21:02\t1795314062\r\n")
	b.WriteString("HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher\r\n")
	for i := range n {
		fmt.Fprintf(&b, "CLIENT_LIST\tclient-%04d.example.org\t198.51.%d.%d:%d\t10.8.%d.%d\t\t%d\t%d\t2026-11-22 01:%02d:%02d\t%d\tuser%04d\t%d\t%d\tAES-256-GCM\r\n",
			i, i/250, i%250, 1024+i, i/250, i%250+2, 1000000+i*37, 9000000+i*91, i/60%60, i%60, 1795309200+i, i, i, i)
	}
	b.WriteString("HEADER\tROUTING_TABLE\tVirtual Address\tCommon Name\tReal Address\tLast Ref\tLast Ref (time_t)\r\n")
	for i := range n {
		fmt.Fprintf(&b, "ROUTING_TABLE\t10.8.%d.%d\tclient-%04d.example.org\t198.51.%d.%d:%d\t2026-11-22 02:21:%02d\t%d\r\n",
			i/250, i%250+2, i, i/250, i%250, 1024+i, i%60, 1795314000+i%60)
	}
	b.WriteString("GLOBAL_STATS\tMax bcast/mcast queue length\t0\r\nGLOBAL_STATS\tdco_enabled\t0\r\nEND\r\n")
	return b.Bytes()
}

func TestBigStatus3(t *testing.T) {
	st, err := ParseStatus(bytes.NewReader(bigStatus3(1000)))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Clients) != 1000 || len(st.Routes) != 1000 || st.Clients[999].Username != "user0999" {
		t.Fatalf("parsed %d clients, %d routes", len(st.Clients), len(st.Routes))
	}
}

// BenchmarkParseStatus parses a status 3 answer with 1,000 clients.
func BenchmarkParseStatus(b *testing.B) {
	in := bigStatus3(1000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseStatus(bytes.NewReader(in)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPollStatusFile polls a status file with 1,000 clients: read,
// parse, sessions, ends.
func BenchmarkPollStatusFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "status.txt")
	in := strings.ReplaceAll(string(bigStatus3(1000)), "\r\n", "\n")
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		b.Fatal(err)
	}
	src, err := New(Config{StatusFile: path, StaleAfter: 24 * time.Hour, Clock: clock.NewFake(time.Unix(1795314070, 0))})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, err := src.Poll(context.Background())
		if err != nil || len(snap.Sessions) != 1000 {
			b.Fatalf("%d sessions, %v", len(snap.Sessions), err)
		}
	}
}
