package main

import (
	"bufio"
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/promtest"
	"github.com/connwatch/connwatch/internal/testproc"
)

// fakeExporter is what a local user runs to answer scrapes in the
// agent's name: perl (always on Debian, in perl-base) listening on addr
// and serving made-up metrics.
const fakeExporter = `use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => $ARGV[0], Listen => 5, ReuseAddr => 1) or die "listen: $!";
$| = 1; print "listening\n";
while (my $c = $s->accept) {
	print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nconnwatch_sessions{kind=\"ssh\",mode=\"tty\"} 0\n";
	close $c;
}`

// TestAgentRefusesTakenMetricsAddress: a real unprivileged user binds
// the metrics address first. The agent does not start (it used to log
// "continuing without it" while the user's process answered the
// scrapes), and says which address and why.
func TestAgentRefusesTakenMetricsAddress(t *testing.T) {
	u := testproc.HostileUser(t)
	perl := testproc.RequireBinary(t, "connwatch", "perl")
	addr := promtest.FreeAddr(t)
	squatter := u.Command(perl, "-e", fakeExporter, addr)
	squatter.SysProcAttr.Setpgid = true
	out, err := squatter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut testproc.Buffer
	squatter.Stderr = &errOut
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-squatter.Process.Pid, syscall.SIGKILL); squatter.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "listening\n" {
		t.Fatalf("%s's listener on %s: %q %v %s", u.Name, addr, line, err, errOut.String())
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	began := time.Now()
	code, _, stderr := runCLIContext(ctx, []string{"agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"),
		"--events", filepath.Join(dir, "events.jsonl"), "--metrics-addr", addr, "--sshd-log", "", "--wall=false"})
	if ctx.Err() != nil {
		t.Fatalf("the agent ran on for %v with its metrics address taken; log:\n%s", time.Since(began).Round(time.Second), stderr)
	}
	if code != exitFailure || !strings.Contains(stderr, "listen for metrics on "+addr) || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d naming %s and why", code, stderr, exitFailure, addr)
	}
}
