package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/prometheus/procfs"
)

// benchChunk is what one benchmark iteration moves through a forward.
const benchChunk = 1 << 20

// dataServer serves, on 127.0.0.1, a sink (reads until EOF, then
// answers the count as 8 bytes) or a source (writes until the peer
// closes).
func dataServer(tb testing.TB, source bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	serveEach(tb, ln, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 256<<10)
		if source {
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}
		n, _ := io.CopyBuffer(io.Discard, c, buf)
		_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	})
	return ln.Addr().String()
}

// benchThrough moves b.N MiB through addr: up to a sink (waiting for its
// count at the end) or down from a source.
func benchThrough(b *testing.B, addr string, up bool, cpu func() time.Duration) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	cpu0 := cpu()
	defer func() {
		// The client's CPU time per MiB (with the data servers', alike
		// for every client): steadier than MB/s on a busy machine.
		b.ReportMetric(float64((cpu()-cpu0).Microseconds())/float64(b.N*benchChunk>>20), "cpu-µs/MiB")
	}()
	b.ResetTimer()
	if up {
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
		var n [8]byte
		if _, err := io.ReadFull(c, n[:]); err != nil || binary.BigEndian.Uint64(n[:]) != uint64(b.N)*benchChunk {
			b.Fatalf("sink count %d, %v; want %d", binary.BigEndian.Uint64(n[:]), err, b.N*benchChunk)
		}
		return
	}
	for range b.N {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCase is one direction through one kind of forward.
type benchCase struct {
	name string
	fwd  Forward
	addr string // where the benchmark connects
	up   bool   // to a sink, else from a source
}

// benchCases makes a LocalForward and a RemoteForward to each of a sink
// and a source; remoteHost is where the server listens for the remote
// ones.
func benchCases(b *testing.B, remoteHost string) []benchCase {
	sink, source := dataServer(b, false), dataServer(b, true)
	mk := func(name string, kind Kind, dest string, up bool) benchCase {
		h, p, _ := net.SplitHostPort(dest)
		pn, _ := strconv.Atoi(p)
		port := freeLocalPort(b)
		c := benchCase{name: name, up: up, fwd: Forward{Kind: kind, BindHost: "127.0.0.1", BindPort: port, DestHost: h, DestPort: pn}}
		c.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if kind == Remote {
			c.addr = net.JoinHostPort(remoteHost, strconv.Itoa(port))
		}
		return c
	}
	return []benchCase{
		mk("Local/up", Local, sink, true),
		mk("Local/down", Local, source, false),
		// Through a RemoteForward "up" is still client to server: the
		// far end reads what the source here sends.
		mk("Remote/up", Remote, source, false),
		mk("Remote/down", Remote, sink, true),
	}
}

// runCases waits (at most 10 s) until every case's address accepts, then
// runs each as a sub-benchmark;
// cpu tells the CPU time the client and the data servers used so far.
func runCases(b *testing.B, cases []benchCase, cpu func() time.Duration) {
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range cases {
		for {
			conn, err := net.Dial("tcp", c.addr)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: forward %s not listening: %v", c.name, c.addr, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchThrough(b, c.addr, c.up, cpu) })
	}
}

// benchTunnel runs spec with every case's forward and benchmarks them.
func benchTunnel(b *testing.B, spec Spec, remoteHost string) {
	cases := benchCases(b, remoteHost)
	for _, c := range cases {
		spec.Forwards = append(spec.Forwards, c.fwd)
	}
	tun := New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	runTunnel(b, tun)
	runCases(b, cases, cpuTime)
}

// BenchmarkForwardInProcess measures throughput through forwards of the
// in-process SSH server on loopback (both ends x/crypto/ssh).
func BenchmarkForwardInProcess(b *testing.B) {
	dir := b.TempDir()
	key, pub := clientKey(b, dir)
	srv := newTestServer(b, pub)
	benchTunnel(b, Spec{
		Host: "bench", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		IdentityFiles: []string{key}, IdentitiesOnly: true,
		UserKnownHostsFiles: []string{srv.knownHosts(b, dir)}, StrictHostKeyChecking: HostKeyStrict,
		ServerAliveInterval: 15 * time.Second, ServerAliveCountMax: 3,
	}, "127.0.0.1")
}

// BenchmarkForwardSSHD measures throughput through forwards of a real
// OpenSSH sshd on loopback (needs root; skipped otherwise), for
// connwatch's tunnel and, as the yardstick, for OpenSSH's ssh -N with
// its default cipher choice (chacha20-poly1305) and with aes128-gcm.
// Run with -count: the clients take turns, so a loaded machine slows
// them alike.
func BenchmarkForwardSSHD(b *testing.B) {
	srv := sshdtest.Start(b, sshdtest.Options{})
	kh := sshdKnownHosts(b, srv)
	b.Run("connwatch", func(b *testing.B) {
		benchTunnel(b, Spec{
			Host: "bench", HostName: srv.Addr, Port: srv.Port, User: srv.User,
			IdentityFiles: []string{srv.ClientKey}, IdentitiesOnly: true,
			UserKnownHostsFiles: []string{kh}, StrictHostKeyChecking: HostKeyStrict,
			ServerAliveInterval: 15 * time.Second, ServerAliveCountMax: 3,
		}, srv.Addr)
	})
	for _, cipher := range []string{"default", "aes128-gcm@openssh.com"} {
		b.Run("openssh-"+strings.TrimSuffix(cipher, "@openssh.com"), func(b *testing.B) {
			cases := benchCases(b, srv.Addr)
			args := []string{"-N", "-o", "ExitOnForwardFailure=yes"}
			if cipher != "default" {
				args = append(args, "-c", cipher)
			}
			for _, c := range cases {
				flag := "-L"
				if c.fwd.Kind == Remote {
					flag = "-R"
				}
				args = append(args, flag, fmt.Sprintf("127.0.0.1:%d:%s", c.fwd.BindPort, c.fwd.DestAddr()))
			}
			cl := srv.SSH(b, args)
			defer cl.Stop()
			runCases(b, cases, func() time.Duration { return cpuTime() + procCPU(cl.Cmd.Process.Pid) })
		})
	}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system CPU time of process pid so far (0 when
// it cannot be read).
func procCPU(pid int) time.Duration {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}
