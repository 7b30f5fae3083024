package procevents

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"
)

// Builders for datagrams laid out as the kernel sends them (see the
// layout comment in parse.go): nlmsghdr, cn_msg, proc_event, union.

// nlmsg is one netlink message, padded to 4 bytes.
func nlmsg(typ uint16, payload []byte) []byte {
	n := nlmsgHdrLen + len(payload)
	b := make([]byte, (n+3)&^3)
	ne.PutUint32(b[0:4], uint32(n))
	ne.PutUint16(b[4:6], typ)
	ne.PutUint32(b[8:12], 7)  // seq: not read
	ne.PutUint32(b[12:16], 0) // pid: the kernel
	copy(b[nlmsgHdrLen:], payload)
	return b
}

// cnmsg is a cn_msg whose len is len(data).
func cnmsg(idx, val, ack uint32, data []byte) []byte {
	b := make([]byte, cnMsgLen+len(data))
	ne.PutUint32(b[0:4], idx)
	ne.PutUint32(b[4:8], val)
	ne.PutUint32(b[8:12], 42) // seq: not read
	ne.PutUint32(b[12:16], ack)
	ne.PutUint16(b[16:18], uint16(len(data)))
	copy(b[cnMsgLen:], data)
	return b
}

// procEvent is a proc_event with its union zero-padded to 24 bytes, the
// size the kernel sends (msg->len = sizeof(struct proc_event) = 40).
func procEvent(what uint32, ts time.Duration, union ...uint32) []byte {
	b := make([]byte, procHdrLen+24)
	ne.PutUint32(b[0:4], what)
	ne.PutUint32(b[4:8], 1) // cpu
	ne.PutUint64(b[8:16], uint64(ts))
	for i, v := range union {
		ne.PutUint32(b[procHdrLen+4*i:], v)
	}
	return b
}

// proc is a whole process-events datagram of one message.
func proc(what uint32, ts time.Duration, union ...uint32) []byte {
	return nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, procEvent(what, ts, union...)))
}

func forkMsg(ppid, ptgid, cpid, ctgid uint32) []byte {
	return proc(procEventFork, 1000, ppid, ptgid, cpid, ctgid)
}
func execMsg(pid, tgid uint32) []byte { return proc(procEventExec, 2000, pid, tgid) }
func exitMsg(pid, tgid, code, sig, ppid, ptgid uint32) []byte {
	return proc(procEventExit, 3000, pid, tgid, code, sig, ppid, ptgid)
}

func join(bs ...[]byte) []byte { return slices.Concat(bs...) }

// truncate returns b with the netlink and connector lengths rewritten so
// that the proc_event is only n bytes long.
func truncated(what uint32, n int, union ...uint32) []byte {
	ev := procEvent(what, 1, union...)[:n]
	return nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, ev))
}

func TestParse(t *testing.T) {
	// nlmsg_len 77: the data is one byte longer than a proc_event; the
	// next message starts at the 4-byte boundary, 80.
	odd := nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, append(procEvent(procEventExec, 5, 9, 9), 0xff)))
	if n := ne.Uint32(odd); n != 77 || len(odd) != 80 {
		t.Fatalf("odd message: nlmsg_len %d, %d bytes", n, len(odd))
	}
	// The pre-4.18 exit event: union without parent_pid, parent_tgid.
	oldExit := nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, procEvent(procEventExit, 3000, 8, 8, 9, 0)[:procHdrLen+16]))
	nlErr := func(errno int32) []byte {
		p := make([]byte, 4+nlmsgHdrLen)
		ne.PutUint32(p, uint32(-errno))
		return nlmsg(nlmsgError, p)
	}

	tests := []struct {
		name string
		in   []byte
		want []Event
	}{
		{"empty", nil, nil},
		{"fork", forkMsg(100, 100, 200, 200), []Event{{Kind: Fork, PID: 200, ParentPID: 100, Time: 1000}}},
		{"fork from a thread of the parent", forkMsg(101, 100, 200, 200), []Event{{Kind: Fork, PID: 200, ParentPID: 100, Time: 1000}}},
		{"thread creation", forkMsg(100, 100, 201, 100), nil},
		{"exec", execMsg(200, 200), []Event{{Kind: Exec, PID: 200, Time: 2000}}},
		{"exec reported for a thread", execMsg(201, 200), nil},
		{"exit", exitMsg(200, 200, 1<<8, 17, 100, 100), []Event{{Kind: Exit, PID: 200, ParentPID: 100, ExitCode: 256, Time: 3000}}},
		{"exit by SIGKILL", exitMsg(200, 200, 9, 17, 101, 100), []Event{{Kind: Exit, PID: 200, ParentPID: 100, ExitCode: 9, Time: 3000}}},
		{"thread exit", exitMsg(201, 200, 0, 0xffffffff, 0, 0), nil},
		{"exit without parent (pre-4.18)", oldExit, []Event{{Kind: Exit, PID: 8, ExitCode: 9, Time: 3000}}},
		{"subscription reply", proc(procEventNone, 1, 0), nil},
		{"uid change", proc(0x4, 1, 200, 200, 1000, 1000), nil},
		{"comm change", proc(0x200, 1, 200, 200, 0x64687373), nil},
		{"coredump", proc(0x40000000, 1, 200, 200, 100, 100), nil},
		{"other connector", nlmsg(nlmsgDone, cnmsg(cnIdxProc+1, cnValProc, 0, procEvent(procEventFork, 1, 1, 1, 2, 2))), nil},
		{"other connector, short", nlmsg(nlmsgDone, cnmsg(7, 1, 0, []byte{1})), nil},
		{"noop", nlmsg(1, nil), nil},
		{"unknown type", nlmsg(0x10, []byte{1, 2, 3}), nil},
		{"netlink error 0 (ack)", nlErr(0), nil},
		{
			"several messages: a process's life",
			join(forkMsg(1, 1, 300, 300), forkMsg(300, 300, 301, 300), execMsg(300, 300), exitMsg(301, 300, 0, 0, 1, 1), exitMsg(300, 300, 0, 17, 1, 1)),
			[]Event{
				{Kind: Fork, PID: 300, ParentPID: 1, Time: 1000},
				{Kind: Exec, PID: 300, Time: 2000},
				{Kind: Exit, PID: 300, ParentPID: 1, Time: 3000},
			},
		},
		{"unaligned length then another", join(odd, execMsg(10, 10)), []Event{{Kind: Exec, PID: 9, Time: 5}, {Kind: Exec, PID: 10, Time: 2000}}},
		{"unaligned length, last, unpadded", odd[:77], []Event{{Kind: Exec, PID: 9, Time: 5}}},
		{"pid above 2^31 is negative", forkMsg(1, 1, 0xffffffff, 0xffffffff), []Event{{Kind: Fork, PID: -1, ParentPID: 1, Time: 1000}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.in)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parse:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	lenTooBig := forkMsg(1, 1, 2, 2)
	ne.PutUint32(lenTooBig, 200)
	lenZero := forkMsg(1, 1, 2, 2)
	ne.PutUint32(lenZero, 0)
	cnLenTooBig := forkMsg(1, 1, 2, 2)
	ne.PutUint16(cnLenTooBig[nlmsgHdrLen+16:], 41)
	nlErr := make([]byte, 4)
	eperm := -int32(syscall.EPERM)
	ne.PutUint32(nlErr, uint32(eperm))

	tests := []struct {
		name    string
		in      []byte
		want    []Event // decoded before the error
		wantErr error
	}{
		{"3 bytes", []byte{1, 2, 3}, nil, errMalformed},
		{"header only, length 0", make([]byte, 16), nil, errMalformed},
		{"nlmsg_len 0", lenZero, nil, errMalformed},
		{"nlmsg_len beyond buffer", lenTooBig, nil, errMalformed},
		{"cut in the union", forkMsg(1, 1, 2, 2)[:60], nil, errMalformed},
		{"cn_msg cut", nlmsg(nlmsgDone, make([]byte, 19)), nil, errMalformed},
		{"cn_msg len beyond message", cnLenTooBig, nil, errMalformed},
		{"proc_event header cut", truncated(procEventFork, 15), nil, errMalformed},
		{"fork union cut", truncated(procEventFork, procHdrLen+15, 1, 1, 2, 2), nil, errMalformed},
		{"exec union cut", truncated(procEventExec, procHdrLen+7, 2, 2), nil, errMalformed},
		{"exit union cut", truncated(procEventExit, procHdrLen+12, 2, 2, 0), nil, errMalformed},
		{"ack cut", truncated(procEventNone, procHdrLen+3), nil, errMalformed},
		{"netlink error cut", nlmsg(nlmsgError, []byte{1, 2}), nil, errMalformed},
		{"netlink error EPERM", nlmsg(nlmsgError, nlErr), nil, syscall.EPERM},
		{
			"good message, then garbage",
			join(forkMsg(1, 1, 2, 2), []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
			[]Event{{Kind: Fork, PID: 2, ParentPID: 1, Time: 1000}},
			errMalformed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("parse: error %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parse:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseAck(t *testing.T) {
	reply := func(ack, errno uint32) []byte {
		return nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, ack, procEvent(procEventNone, 1, errno)))
	}
	var acks []ack
	evs, err := appendEvents(nil, join(reply(11, 0), execMsg(5, 5), reply(8, uint32(syscall.EPERM))), func(a ack) { acks = append(acks, a) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []ack{{11, 0}, {8, syscall.EPERM}}; !slices.Equal(acks, want) {
		t.Errorf("acks %v, want %v", acks, want)
	}
	if len(evs) != 1 || evs[0].PID != 5 {
		t.Errorf("events %+v, want the exec of 5", evs)
	}
}

// TestRequest checks the subscription message against the layout the
// kernel expects: nlmsghdr, cn_msg for CN_IDX_PROC, then the operation
// and, for the 6.6+ filter, struct proc_input.
func TestRequest(t *testing.T) {
	for _, tc := range []struct {
		op, events uint32
		len        int
	}{
		{procCnMcastListen, 0, 40},
		{procCnMcastIgnore, 0, 40},
		{procCnMcastListen, procEventsWanted, 44},
	} {
		b := request(tc.op, tc.events, 0xfffffffe)
		if len(b) != tc.len || ne.Uint32(b[0:4]) != uint32(tc.len) || ne.Uint16(b[4:6]) != nlmsgDone {
			t.Errorf("op %d: header %x", tc.op, b[:16])
		}
		c := b[16:]
		if ne.Uint32(c[0:4]) != 1 || ne.Uint32(c[4:8]) != 1 || ne.Uint32(c[12:16]) != 0xfffffffe || int(ne.Uint16(c[16:18])) != tc.len-36 {
			t.Errorf("op %d: cn_msg %x", tc.op, c[:20])
		}
		if ne.Uint32(c[20:24]) != tc.op {
			t.Errorf("op %d: data %x", tc.op, c[20:])
		}
		if tc.events != 0 && ne.Uint32(c[24:28]) != 0x80000003 {
			t.Errorf("op %d: event filter %x", tc.op, c[24:28])
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	f.Add(forkMsg(100, 100, 200, 200))
	f.Add(join(forkMsg(1, 1, 300, 300), execMsg(300, 300), exitMsg(300, 300, 0, 17, 1, 1)))
	f.Add(proc(procEventNone, 1, 0))
	f.Add(truncated(procEventExit, procHdrLen+12, 2, 2, 0))
	f.Add(nlmsg(nlmsgError, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := parse(b)
		// The smallest message that yields an event: a fork or exit needs
		// 16+20+16+16 bytes, an exec 16+20+16+8.
		if max := len(b) / (nlmsgHdrLen + cnMsgLen + procHdrLen + execLen); len(evs) > max {
			t.Fatalf("%d events from %d bytes", len(evs), len(b))
		}
		for _, ev := range evs {
			if ev.Kind < Fork || ev.Kind > Exit {
				t.Fatalf("event of kind %v", ev.Kind)
			}
		}
		if err != nil && !errors.Is(err, errMalformed) {
			var errno syscall.Errno
			if !errors.As(err, &errno) {
				t.Fatalf("error %v is neither malformed nor an errno", err)
			}
		}
	})
}

// BenchmarkParse decodes one event per datagram, as the kernel sends them,
// into a reused slice, as Run does.
func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"fork", forkMsg(100, 100, 200, 200)},
		{"thread", forkMsg(100, 100, 201, 100)},
		{"3 messages", join(forkMsg(1, 1, 300, 300), execMsg(300, 300), exitMsg(300, 300, 0, 17, 1, 1))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			var evs []Event
			for b.Loop() {
				var err error
				if evs, err = appendEvents(evs[:0], bc.in, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
