package procevents

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// The wire format, from include/uapi/linux/netlink.h, connector.h and
// cn_proc.h. Every field is in host byte order. One datagram holds one or
// more netlink messages, each padded to 4 bytes:
//
//	struct nlmsghdr   16 bytes: len u32, type u16, flags u16, seq u32, pid u32
//	struct cn_msg     20 bytes: idx u32, val u32, seq u32, ack u32, len u16, flags u16
//	struct proc_event 16 bytes: what u32, cpu u32, timestamp_ns u64
//	                  + union event_data (24 bytes today), of which we read
//	    ack:  err u32
//	    fork: parent_pid, parent_tgid, child_pid, child_tgid (s32 each)
//	    exec: process_pid, process_tgid
//	    exit: process_pid, process_tgid, exit_code u32, exit_signal u32,
//	          parent_pid, parent_tgid (the last two since Linux 4.18)
//
// The proc_event starts 36 bytes into the datagram, so its u64 is not
// 8-byte aligned there: fields are decoded by offset rather than by casting
// the buffer to Go structs.
const (
	nlmsgHdrLen = 16
	cnMsgLen    = 20
	procHdrLen  = 16

	nlmsgError = 0x2 // NLMSG_ERROR
	nlmsgDone  = 0x3 // NLMSG_DONE: the type the connector sends

	cnIdxProc = 0x1 // CN_IDX_PROC, also the multicast group
	cnValProc = 0x1 // CN_VAL_PROC

	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2 // PROC_CN_MCAST_IGNORE

	procEventNone = 0x00000000 // PROC_EVENT_NONE: the reply to a subscription
	procEventFork = 0x00000001
	procEventExec = 0x00000002
	procEventExit = 0x80000000

	// procEventsWanted is the kernel-side filter: fork, exec and exit.
	procEventsWanted = procEventFork | procEventExec | procEventExit

	forkLen      = 16 // bytes of event_data we need per kind
	execLen      = 8
	exitLen      = 16
	exitLenLinux = 24 // with parent_pid, parent_tgid
	ackLen       = 4
)

var ne = binary.NativeEndian

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed process event")

// ack is the kernel's reply to a (un)subscription: PROC_EVENT_NONE, with
// cn_msg.ack set to the request's ack plus one and an errno (0 for success).
type ack struct {
	ack   uint32
	errno syscall.Errno
}

// parse decodes one datagram read from the connector socket into the
// events it reports, dropping thread events, subscription replies and
// event kinds other than fork, exec and exit.
func parse(b []byte) ([]Event, error) {
	return appendEvents(nil, b, nil)
}

// appendEvents decodes b like parse, appending to evs and handing
// subscription replies to onAck if it is not nil. On error it returns the
// events decoded before the bad message.
func appendEvents(evs []Event, b []byte, onAck func(ack)) ([]Event, error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return evs, fmt.Errorf("decode netlink header: %w: %d bytes left, need %d", errMalformed, len(b), nlmsgHdrLen)
		}
		n := ne.Uint32(b[0:4])
		typ := ne.Uint16(b[4:6])
		if n < nlmsgHdrLen || n > uint32(len(b)) {
			return evs, fmt.Errorf("decode netlink header: %w: length %d with %d bytes left", errMalformed, n, len(b))
		}
		payload := b[nlmsgHdrLen:n]
		switch typ {
		case nlmsgDone:
			var err error
			if evs, err = appendConnector(evs, payload, onAck); err != nil {
				return evs, err
			}
		case nlmsgError:
			if len(payload) < 4 {
				return evs, fmt.Errorf("decode netlink error: %w: %d bytes", errMalformed, len(payload))
			}
			if code := int32(ne.Uint32(payload[0:4])); code != 0 {
				return evs, fmt.Errorf("receive process events: %w", syscall.Errno(-code))
			}
		default:
			// NLMSG_NOOP, or a type the connector does not send.
		}
		// Messages are padded to 4 bytes; the last one may be unpadded.
		next := (int(n) + 3) &^ 3
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
	}
	return evs, nil
}

// appendConnector decodes a cn_msg carrying a proc_event.
func appendConnector(evs []Event, p []byte, onAck func(ack)) ([]Event, error) {
	if len(p) < cnMsgLen {
		return evs, fmt.Errorf("decode connector header: %w: %d bytes, need %d", errMalformed, len(p), cnMsgLen)
	}
	if ne.Uint32(p[0:4]) != cnIdxProc || ne.Uint32(p[4:8]) != cnValProc {
		return evs, nil // another connector user; not ours
	}
	cnAck := ne.Uint32(p[12:16])
	dataLen := int(ne.Uint16(p[16:18]))
	data := p[cnMsgLen:]
	if dataLen > len(data) {
		return evs, fmt.Errorf("decode connector header: %w: data length %d with %d bytes left", errMalformed, dataLen, len(data))
	}
	data = data[:dataLen]
	if len(data) < procHdrLen {
		return evs, fmt.Errorf("decode proc_event: %w: %d bytes, need %d", errMalformed, len(data), procHdrLen)
	}
	what := ne.Uint32(data[0:4])
	ts := time.Duration(ne.Uint64(data[8:16]))
	u := data[procHdrLen:]
	var need int
	switch what {
	case procEventNone:
		need = ackLen
	case procEventFork:
		need = forkLen
	case procEventExec:
		need = execLen
	case procEventExit:
		need = exitLen
	default:
		return evs, nil // uid, gid, sid, ptrace, comm, coredump
	}
	if len(u) < need {
		return evs, fmt.Errorf("decode proc_event %#x: %w: %d bytes of event data, need %d", what, errMalformed, len(u), need)
	}

	switch what {
	case procEventNone:
		if onAck != nil {
			onAck(ack{ack: cnAck, errno: syscall.Errno(ne.Uint32(u[0:4]))})
		}
	case procEventFork:
		if pid, tgid := s32(u, 8), s32(u, 12); pid == tgid {
			evs = append(evs, Event{Kind: Fork, PID: tgid, ParentPID: s32(u, 4), Time: ts})
		}
	case procEventExec:
		if pid, tgid := s32(u, 0), s32(u, 4); pid == tgid {
			evs = append(evs, Event{Kind: Exec, PID: tgid, Time: ts})
		}
	case procEventExit:
		if pid, tgid := s32(u, 0), s32(u, 4); pid == tgid {
			ev := Event{Kind: Exit, PID: tgid, ExitCode: ne.Uint32(u[8:12]), Time: ts}
			if len(u) >= exitLenLinux {
				ev.ParentPID = s32(u, 20)
			}
			evs = append(evs, ev)
		}
	}
	return evs, nil
}

// s32 reads a pid (__kernel_pid_t, a signed 32-bit int) at off.
func s32(b []byte, off int) int { return int(int32(ne.Uint32(b[off : off+4]))) }

// request encodes a connector message to the process events connector:
// op (PROC_CN_MCAST_LISTEN or PROC_CN_MCAST_IGNORE) and, if events is not
// zero, the event filter of struct proc_input (Linux 6.6+).
func request(op, events, ackNonce uint32) []byte {
	dataLen := 4
	if events != 0 {
		dataLen = 8
	}
	n := nlmsgHdrLen + cnMsgLen + dataLen
	b := make([]byte, n)
	ne.PutUint32(b[0:4], uint32(n))
	ne.PutUint16(b[4:6], nlmsgDone)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:4], cnIdxProc)
	ne.PutUint32(c[4:8], cnValProc)
	ne.PutUint32(c[12:16], ackNonce)
	ne.PutUint16(c[16:18], uint16(dataLen))
	d := c[cnMsgLen:]
	ne.PutUint32(d[0:4], op)
	if events != 0 {
		ne.PutUint32(d[4:8], events)
	}
	return b
}
