package tunnel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// testServer is an in-process SSH server on 127.0.0.1 that serves
// direct-tcpip channels, tcpip-forward requests and keepalives, and that
// a test can stop and start again on the same port, or make deaf to
// keepalives while keeping TCP open.
type testServer struct {
	t      testing.TB
	addr   string
	config *ssh.ServerConfig
	hostPK ssh.PublicKey
	mute   atomic.Bool // ignore keepalive requests (no reply at all)
	// stale keeps the remote forward listeners of a connection that
	// ended, as sshd does until it notices a dead client, until
	// releaseStale.
	stale atomic.Bool
	// stallNew makes every connection accepted from now on stalled from
	// its start (see stallExisting) until the test ends or stop.
	stallNew atomic.Bool
	accepted atomic.Int64 // TCP connections accepted so far
	denyAuth atomic.Bool  // refuse every key from now on
	// replyDelay delays every keepalive reply (nanoseconds; 0: none).
	replyDelay atomic.Int64
	channels   atomic.Int64 // direct-tcpip channels asked for so far

	mu    sync.Mutex
	ln    net.Listener
	conns map[*stallConn]bool
	held  []net.Listener // kept by stale
	wg    sync.WaitGroup
}

// clientKey writes an unencrypted ed25519 key to dir and returns its
// path and public key.
func clientKey(t testing.TB, dir string) (string, ssh.PublicKey) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return path, s.PublicKey()
}

// newSigner returns a fresh ed25519 signer.
func newSigner(t testing.TB) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestServer(t testing.TB, authorized ssh.PublicKey) *testServer {
	return newTestServerWithHostKey(t, authorized, newSigner(t))
}

// newTestServerWithHostKey is newTestServer presenting hk (which may be
// a certificate signer) as its only host key.
func newTestServerWithHostKey(t testing.TB, authorized ssh.PublicKey, hk ssh.Signer) *testServer {
	var s *testServer
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if s.denyAuth.Load() {
				return nil, fmt.Errorf("keys refused")
			}
			if string(k.Marshal()) == string(authorized.Marshal()) {
				return nil, nil
			}
			return nil, fmt.Errorf("unknown key")
		},
	}
	cfg.AddHostKey(hk)
	s = &testServer{t: t, config: cfg, hostPK: hk.PublicKey(), conns: map[*stallConn]bool{}}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// knownHosts writes a known_hosts file holding the server's key.
func (s *testServer) knownHosts(t testing.TB, dir string) string {
	path := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(s.addr)}, s.hostPK)
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *testServer) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("listen: %v", err)
	}
	s.mu.Lock()
	s.ln, s.addr = ln, ln.Addr().String()
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			c := &stallConn{Conn: nc}
			if s.stallNew.Load() {
				c.stall()
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(c) })
		}
	})
}

// stallExisting stalls every connection open now, as a path that
// silently drops their packets (a NAT or firewall that lost its state)
// would, while new connections go through; resume undoes it.
func (s *testServer) stallExisting() (resume func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*stallConn
	for c := range s.conns {
		c.stall()
		cs = append(cs, c)
	}
	return func() {
		for _, c := range cs {
			c.resume()
		}
	}
}

// open returns the number of connections being served.
func (s *testServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// stallConn is a server connection a test can stall: what it reads is
// then held back and its writes wait, until resume (or Close, which
// resumes it first so that nothing waits forever).
type stallConn struct {
	net.Conn
	mu   sync.Mutex
	gate chan struct{} // nil while flowing; closed on resume
}

func (c *stallConn) stall() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate == nil {
		c.gate = make(chan struct{})
	}
}

func (c *stallConn) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
}

func (c *stallConn) wait() {
	c.mu.Lock()
	g := c.gate
	c.mu.Unlock()
	if g != nil {
		<-g
	}
}

func (c *stallConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.wait()
	return n, err
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.wait()
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.resume()
	return c.Conn.Close()
}

// restart starts listening again on the same port.
func (s *testServer) restart() { s.start(s.addr) }

// releaseStale closes the listeners kept by stale.
func (s *testServer) releaseStale() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.held {
		ln.Close()
	}
	s.held = nil
}

// stop closes the listener and every connection.
func (s *testServer) stop() {
	s.releaseStale()
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) serve(c *stallConn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	sc, chans, reqs, err := ssh.NewServerConn(c, s.config)
	if err != nil {
		return
	}
	defer sc.Close()
	var listeners sync.Map
	defer listeners.Range(func(k, _ any) bool {
		if s.stale.Load() {
			s.mu.Lock()
			s.held = append(s.held, k.(net.Listener))
			s.mu.Unlock()
			return true
		}
		k.(net.Listener).Close()
		return true
	})
	s.wg.Go(func() {
		for r := range reqs {
			switch r.Type {
			case "keepalive@openssh.com":
				switch d := time.Duration(s.replyDelay.Load()); {
				case s.mute.Load():
				case d > 0:
					s.wg.Go(func() { time.Sleep(d); _ = r.Reply(false, nil) })
				default:
					_ = r.Reply(false, nil) // as OpenSSH does
				}
			case "tcpip-forward":
				var m struct {
					Addr string
					Port uint32
				}
				if ssh.Unmarshal(r.Payload, &m) != nil {
					_ = r.Reply(false, nil)
					continue
				}
				ln, err := net.Listen("tcp", net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port))))
				if err != nil {
					_ = r.Reply(false, nil)
					continue
				}
				listeners.Store(ln, true)
				port := uint32(ln.Addr().(*net.TCPAddr).Port)
				_ = r.Reply(true, binary.BigEndian.AppendUint32(nil, port))
				s.wg.Go(func() { s.forwardOut(sc, ln, m.Addr, port) })
			default:
				_ = r.Reply(false, nil)
			}
		}
	})
	for nc := range chans {
		if nc.ChannelType() != "direct-tcpip" {
			_ = nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		s.channels.Add(1)
		var m struct {
			Host     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}
		if ssh.Unmarshal(nc.ExtraData(), &m) != nil {
			_ = nc.Reject(ssh.ConnectionFailed, "bad payload")
			continue
		}
		d, err := net.Dial("tcp", net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port))))
		if err != nil {
			_ = nc.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			d.Close()
			continue
		}
		go ssh.DiscardRequests(creqs)
		s.wg.Go(func() { relay(ch, d) })
	}
}

func (s *testServer) forwardOut(sc *ssh.ServerConn, ln net.Listener, addr string, port uint32) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		ra := c.RemoteAddr().(*net.TCPAddr)
		payload := ssh.Marshal(struct {
			Addr     string
			Port     uint32
			OrigAddr string
			OrigPort uint32
		}{addr, port, ra.IP.String(), uint32(ra.Port)})
		ch, reqs, err := sc.OpenChannel("forwarded-tcpip", payload)
		if err != nil {
			c.Close()
			continue
		}
		go ssh.DiscardRequests(reqs)
		s.wg.Go(func() { relay(ch, c) })
	}
}

func relay(ch ssh.Channel, c net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(ch, c); _ = ch.CloseWrite() })
	wg.Go(func() { _, _ = io.Copy(c, ch); _ = c.(*net.TCPConn).CloseWrite() })
	wg.Wait()
	ch.Close()
	c.Close()
}

// echoServer echoes on 127.0.0.1 until the test ends.
func echoServer(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) { _, _ = io.Copy(c, c); c.Close() })
	return ln.Addr().String()
}

// freeLocalPort returns a 127.0.0.1 port that was free a moment ago.
func freeLocalPort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runTunnel runs tun until the test ends, then checks that Run returned
// cleanly (within 5 s of the cancel).
func runTunnel(t testing.TB, tun *Tunnel) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5 s of cancel")
		}
	})
}

// serveEach accepts on ln until the test ends, handling each connection
// on its own goroutine.
func serveEach(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { handle(c) })
		}
	})
}
