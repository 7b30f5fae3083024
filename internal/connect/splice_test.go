package connect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// serve accepts one connection on a loopback listener and runs handle
// on it; the returned channel yields handle's result.
func serve(t *testing.T, handle func(*net.TCPConn) error) (net.Conn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	res := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- err
			return
		}
		defer c.Close()
		res <- handle(c.(*net.TCPConn))
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return conn, res
}

// When standard input ends, the server sees end of file on a
// half-closed connection and can still answer: what `scp` and `rsync`
// need, and `ssh host cmd < file`.
func TestSpliceHalfClose(t *testing.T) {
	conn, res := serve(t, func(c *net.TCPConn) error {
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c, "got %d bytes", len(b))
		return err
	})
	in := strings.NewReader(strings.Repeat("x", 100000))
	var out bytes.Buffer
	if err := Splice(t.Context(), conn, in, &out); err != nil {
		t.Fatalf("Splice: %v", err)
	}
	if out.String() != "got 100000 bytes" {
		t.Errorf("out %q", out.String())
	}
	if err := <-res; err != nil {
		t.Errorf("server: %v", err)
	}
}

// When the server closes, Splice returns although standard input is
// still open, stops reading it and leaves it readable.
func TestSpliceServerCloses(t *testing.T) {
	conn, _ := serve(t, func(c *net.TCPConn) error {
		_, err := c.Write([]byte("bye"))
		return err
	})
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	done := make(chan error, 1)
	go func() { done <- Splice(t.Context(), conn, inR, outW) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Splice: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Splice did not return when the server closed")
	}
	outW.Close()
	if b, _ := io.ReadAll(outR); string(b) != "bye" {
		t.Errorf("out %q", b)
	}
	// Standard input was not consumed past what was sent, and its read
	// deadline is cleared.
	inW.Write([]byte("later"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(inR, buf); err != nil || string(buf) != "later" {
		t.Errorf("read stdin after Splice: %q, %v", buf, err)
	}
}

// Cancelling the context ends Splice.
func TestSpliceInterrupted(t *testing.T) {
	conn, _ := serve(t, func(c *net.TCPConn) error {
		_, err := io.Copy(io.Discard, c)
		return err
	})
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Splice(ctx, conn, inR, io.Discard) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Splice: %v, want interrupted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Splice did not return on cancel")
	}
}

// Bytes arrive unchanged both ways, in any sizes.
func TestSpliceEcho(t *testing.T) {
	conn, res := serve(t, func(c *net.TCPConn) error {
		if _, err := io.Copy(c, c); err != nil {
			return err
		}
		return c.CloseWrite()
	})
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	var out bytes.Buffer
	if err := Splice(t.Context(), conn, bytes.NewReader(want), &out); err != nil {
		t.Fatalf("Splice: %v", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("echo: %d bytes back, want %d equal ones", out.Len(), len(want))
	}
	if err := <-res; err != nil {
		t.Errorf("server: %v", err)
	}
}

// Run is Dial and Splice: the banner comes out, the end of standard
// input reaches the server, whose close ends Run.
func TestRun(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNameRunning, public: s.host})
	o, _ := setup(t, f, s, clk, id)
	var out bytes.Buffer
	if err := Run(t.Context(), o, strings.NewReader("SSH-2.0-client\r\n"), &out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if out.String() != banner {
		t.Errorf("out %q, want the banner", out.String())
	}
}

// Standard input as a pipe goes to the socket with splice(2): 8 MiB
// through a small send buffer (so the socket is often full and the pipe
// often empty) arrive whole, and the end of input still half-closes. (A
// small receive buffer set after accept stalls loopback TCP whatever the
// sender does.)
func TestSplicePipeToSocket(t *testing.T) {
	const size = 8 << 20
	sum := func(b []byte) (s uint64) {
		for i, c := range b {
			s += uint64(i%251) * uint64(c)
		}
		return s
	}
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 13)
	}
	conn, res := serve(t, func(c *net.TCPConn) error {
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c, "%d %d", len(b), sum(b))
		return err
	})
	conn.(*net.TCPConn).SetWriteBuffer(8 << 10)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	go func() {
		for b := want; len(b) > 0; b = b[min(len(b), 100_000):] {
			if _, err := inW.Write(b[:min(len(b), 100_000)]); err != nil {
				break
			}
		}
		inW.Close()
	}()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Splice(t.Context(), conn, inR, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Splice: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Splice hung")
	}
	if got, w := out.String(), fmt.Sprintf("%d %d", size, sum(want)); got != w {
		t.Errorf("server got %q, want %q", got, w)
	}
	if err := <-res; err != nil {
		t.Errorf("server: %v", err)
	}
}
