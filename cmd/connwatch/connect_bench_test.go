package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/connect"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
	mrand "math/rand/v2"
)

// Benchmarks of connwatch connect against a running instance whose
// sshd is a real one on loopback (scripts/bench-connect.sh runs them).

const benchID = "i-0bbbbbbbbbbbbbbbb"

func benchLab(b *testing.B) (*awstest.Server, *sshdtest.Server) {
	b.Helper()
	return benchAWS(b), sshdtest.Start(b, sshdtest.Options{})
}

// benchAWS is the loopback AWS server with benchID running at 127.0.0.1.
func benchAWS(b *testing.B) *awstest.Server {
	b.Helper()
	s := awstest.New(b, awstest.WithRegion("eu-west-1"))
	s.Env(b)
	b.Setenv("XDG_RUNTIME_DIR", b.TempDir())
	s.AddInstance(awstest.Instance{ID: benchID, State: awstest.InstanceRunning, PublicIP: "127.0.0.1", ElasticIP: true})
	return s
}

// connectProc starts this test binary as `connwatch connect` to the
// instance on port, with stdin a pipe that stays open.
func connectProc(b *testing.B, port int, stderr io.Writer, flags ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	b.Helper()
	args := append([]string{"connect", "--region", "eu-west-1"}, flags...)
	cmd := connwatchCmd(b, append(args, benchID, strconv.Itoa(port))...)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return cmd, in, out
}

func readBanner(b *testing.B, r io.Reader) {
	b.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		b.Fatalf("banner %q: %v", line, err)
	}
}

// BenchmarkConnectFirstByte: from nothing to sshd's banner in hand. direct
// is a TCP connect; connect starts the connwatch process, which asks EC2
// (the loopback server) once, dials and splices.
func BenchmarkConnectFirstByte(b *testing.B) {
	aws, sshd := benchLab(b)
	addr := net.JoinHostPort(sshd.Addr, strconv.Itoa(sshd.Port))
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			readBanner(b, c)
			c.Close()
		}
	})
	b.Run("connect", func(b *testing.B) {
		for b.Loop() {
			bannerThroughConnect(b, sshd.Port)
		}
	})
	// With EC2 20 ms away: a first connect (no remembered address, a
	// fresh lock directory each time) asks, then dials; later ones dial
	// the remembered address while they ask.
	aws.SetLatency(20 * time.Millisecond)
	for _, warm := range []bool{false, true} {
		name := "connect-ec2-20ms-first"
		if warm {
			name = "connect-ec2-20ms-again"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if !warm {
					b.StopTimer()
					b.Setenv("XDG_RUNTIME_DIR", b.TempDir())
					b.StartTimer()
				}
				bannerThroughConnect(b, sshd.Port)
			}
		})
	}
}

// bannerThroughConnect starts connect to the instance on port, reads
// sshd's banner through it and ends it.
func bannerThroughConnect(b *testing.B, port int) {
	b.Helper()
	cmd, in, out := connectProc(b, port, nil)
	readBanner(b, out)
	in.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// BenchmarkConnectThroughput: 64 MiB through ssh to `cat > /dev/null`,
// direct and with connect as the ProxyCommand (the same ssh, cipher and
// sshd; only the path differs).
func BenchmarkConnectThroughput(b *testing.B) {
	_, sshd := benchLab(b)
	src := filepath.Join(b.TempDir(), "64MiB")
	data := make([]byte, 64<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"direct", "connect"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				args := sshd.SSHArgs()
				if mode == "connect" {
					// Same port, same user, but reached through connect:
					// the host given to ssh is the instance id.
					args = append(args[:len(args)-1], "-o", "ProxyCommand="+exe+" connect --region eu-west-1 %h %p", sshd.User+"@"+benchID)
				}
				cmd := exec.Command(sshdtest.RequireBinary(b, "ssh"), append(args, "cat > /dev/null")...)
				cmd.Env = append(os.Environ(), "CONNWATCH_TEST_MAIN=1")
				f, err := os.Open(src)
				if err != nil {
					b.Fatal(err)
				}
				cmd.Stdin = f
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("ssh %s: %v: %s", mode, err, out)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkConnectAfterListen: the instance runs but nothing listens on
// its SSH port yet; connect keeps dialling. The metric ms-after-listen is
// the time from the listener's start to the banner arriving through
// connect (a Go listener writing an SSH banner, so its start time is
// exact), opened at a random point between two of connect's dials.
func BenchmarkConnectAfterListen(b *testing.B) {
	benchAWS(b)
	var total time.Duration
	for b.Loop() {
		port := freeTCPPort(b)
		var stderr testproc.Buffer
		cmd, in, out := connectProc(b, port, &stderr, "--timeout", "30s")
		// Once connect is dialling the closed port, the listener comes
		// at a random point between two attempts.
		testproc.WaitFor(b, "connect to dial the closed port", 10*time.Second, func() bool {
			return strings.Contains(stderr.String(), "not answering yet")
		})
		time.Sleep(mrand.N(connect.DefaultDialInterval))
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			b.Fatal(err)
		}
		up := time.Now()
		go func() {
			c, err := l.Accept()
			if err == nil {
				_, _ = io.WriteString(c, "SSH-2.0-bench\r\n")
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		readBanner(b, out)
		total += time.Since(up)
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		l.Close()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-after-listen")
}
