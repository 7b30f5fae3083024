package connect

import (
	"io"
	"net"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The splice against a direct loopback TCP connection: what the proxy
// costs ssh in throughput and in latency. Through the proxy, ssh's side
// is a pair of pipes, as OpenSSH gives a ProxyCommand.
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/connect

const chunk = 64 << 10

// benchServer accepts one connection and runs handle on it.
func benchServer(b *testing.B, handle func(*net.TCPConn)) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		handle(c.(*net.TCPConn))
	}()
	return ln.Addr().String()
}

// end is one side of the byte stream as ssh sees it.
type end struct {
	w     io.WriteCloser
	r     io.Reader
	close func()
}

// directEnd is a TCP connection to addr.
func directEnd(b *testing.B, addr string) end {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return end{w: closeWriter{c.(*net.TCPConn)}, r: c, close: func() { c.Close() }}
}

type closeWriter struct{ *net.TCPConn }

func (c closeWriter) Close() error { return c.CloseWrite() }

// proxyEnd is a pair of pipes spliced to a TCP connection to addr.
func proxyEnd(b *testing.B, addr string) end {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Splice(b.Context(), c, inR, outW)
		outW.Close()
	}()
	return end{w: inW, r: outR, close: func() {
		inW.Close()
		if err := <-done; err != nil {
			b.Error(err)
		}
		inR.Close()
		outR.Close()
	}}
}

func BenchmarkThroughput(b *testing.B) {
	for _, path := range []struct {
		name string
		open func(*testing.B, string) end
	}{{"direct", directEnd}, {"proxy", proxyEnd}} {
		// up: ssh sends (scp to the instance).
		b.Run("up/"+path.name, func(b *testing.B) {
			got := make(chan int64, 1)
			addr := benchServer(b, func(c *net.TCPConn) {
				n, _ := io.Copy(io.Discard, c)
				got <- n
			})
			e := path.open(b, addr)
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for range b.N {
				if _, err := e.w.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			e.w.Close()
			if n := <-got; n != int64(b.N)*chunk {
				b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*chunk)
			}
			b.StopTimer()
			e.close()
		})
		// down: ssh receives (scp from the instance).
		b.Run("down/"+path.name, func(b *testing.B) {
			n := b.N
			addr := benchServer(b, func(c *net.TCPConn) {
				buf := make([]byte, chunk)
				for range n {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
			e := path.open(b, addr)
			b.SetBytes(chunk)
			b.ResetTimer()
			got, err := io.Copy(io.Discard, e.r)
			if err != nil || got != int64(n)*chunk {
				b.Fatalf("read %d bytes, %v; want %d", got, err, int64(n)*chunk)
			}
			b.StopTimer()
			e.close()
		})
	}
}

// BenchmarkEcho is the round trip of one byte to an echo server: the
// latency a keystroke sees.
func BenchmarkEcho(b *testing.B) {
	for _, path := range []struct {
		name string
		open func(*testing.B, string) end
	}{{"direct", directEnd}, {"proxy", proxyEnd}} {
		b.Run(path.name, func(b *testing.B) {
			addr := benchServer(b, func(c *net.TCPConn) { io.Copy(c, c) })
			e := path.open(b, addr)
			one := []byte{'x'}
			back := make([]byte, 1)
			b.ResetTimer()
			for range b.N {
				if _, err := e.w.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(e.r, back); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			e.w.Close()
			e.close()
		})
	}
}

// BenchmarkFirstByte is a new connection to a running instance up to
// the first byte back: Dial (one DescribeInstances, answered at once by
// the fake, and the TCP connect), Splice, a byte there and back. Against
// direct: the TCP connect and the same byte. It leaves out process start
// and the real DescribeInstances round trip, which the proxy adds on top.
func BenchmarkFirstByte(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	b.Run("direct", func(b *testing.B) {
		back := make([]byte, 1)
		for range b.N {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				b.Fatal(err)
			}
			c.Write([]byte{'x'})
			if _, err := io.ReadFull(c, back); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("proxy", func(b *testing.B) {
		clk := newAutoClock()
		f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNameRunning, public: "127.0.0.1"})
		o := Options{Client: f, Target: Target{ID: id}, Port: addr.Port, LockDir: b.TempDir(), Clock: clk}
		back := make([]byte, 1)
		for range b.N {
			inR, inW, _ := os.Pipe()
			outR, outW, _ := os.Pipe()
			conn, err := Dial(b.Context(), o)
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- Splice(b.Context(), conn, inR, outW) }()
			inW.Write([]byte{'x'})
			if _, err := io.ReadFull(outR, back); err != nil {
				b.Fatal(err)
			}
			inW.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			inR.Close()
			outR.Close()
			outW.Close()
		}
	})
}
