package tunnel

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stoppableEcho is an echo server on 127.0.0.1 that can be stopped and
// started again on the same port.
type stoppableEcho struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	ln   net.Listener
	wg   sync.WaitGroup
}

func newStoppableEcho(t *testing.T) *stoppableEcho {
	e := &stoppableEcho{t: t}
	e.start("127.0.0.1:0")
	t.Cleanup(e.stop)
	return e
}

func (e *stoppableEcho) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.ln, e.addr = ln, ln.Addr().String()
	e.mu.Unlock()
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Go(func() { _, _ = io.Copy(c, c); c.Close() })
		}
	})
}

func (e *stoppableEcho) stop() {
	e.mu.Lock()
	if e.ln != nil {
		e.ln.Close()
		e.ln = nil
	}
	e.mu.Unlock()
	e.wg.Wait()
}

func TestProbeMarksUnreachableDestination(t *testing.T) {
	echo := newStoppableEcho(t)
	eh, ep, _ := net.SplitHostPort(echo.addr)
	epn, _ := strconv.Atoi(ep)
	f := runFixture(t, time.Second, func(sp *Spec, o *Options) {
		sp.Forwards[0].DestHost, sp.Forwards[0].DestPort = eh, epn
		o.ProbeInterval = 100 * time.Millisecond
	})
	within(t, 5*time.Second, "tunnel up", func() bool { return f.tun.Status().State == StateUp })
	if err := roundTrip(f.local, "before"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few good probes
	if st := f.tun.Status().Forwards[0]; st.State != StateListening {
		t.Fatalf("destination up: forward = %+v", st)
	}
	echo.stop()
	within(t, 3*time.Second, "forward down", func() bool { return f.tun.Status().Forwards[0].State == StateDown })
	st := f.tun.Status()
	if st.State != StateUp || st.Reconnects != 0 {
		t.Errorf("tunnel = %+v, want up without reconnects", st)
	}
	if fs := st.Forwards[0]; !strings.Contains(fs.LastError, "probe "+echo.addr) {
		t.Errorf("forward error = %q, want the probe's", fs.LastError)
	}
	echo.start(echo.addr)
	within(t, 3*time.Second, "forward back", func() bool { return f.tun.Status().Forwards[0].State == StateListening })
	if err := roundTrip(f.local, "after"); err != nil {
		t.Fatal(err)
	}
	if st := f.tun.Status(); st.State != StateUp || st.Reconnects != 0 {
		t.Errorf("tunnel = %+v, want up without reconnects", st)
	}
}
