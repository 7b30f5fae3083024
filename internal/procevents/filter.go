package procevents

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
)

// The kernel sends every fork, exec and exit on the machine to every
// listener, and a user's fork loop makes thousands a second: waking up for
// each costs a listener far more than reading it. A classic BPF socket
// filter lets the kernel drop, before they are queued, the events of
// processes the listener does not care about. The filter sees the
// datagram from its netlink header on and loads words big-endian.
const (
	// Offsets in a datagram of one process event message.
	offWhat = nlmsgHdrLen + cnMsgLen // proc_event.what
	offData = offWhat + procHdrLen   // event_data
	// offTGID holds fork's parent_tgid, exec's and exit's process_tgid.
	offTGID = offData + 4
	// offExitParent holds exit's parent_tgid (Linux 4.18+); a message must
	// be this long to have it.
	offExitParent = offData + 20
	lenExitParent = offExitParent + 4

	// bpfMaxInsns is the kernel's limit on a classic BPF program.
	bpfMaxInsns = 4096
	// chunk is how many compares share one "accept" instruction: jumps
	// within a classic BPF program reach at most 255 instructions ahead.
	chunk = 250
)

// MaxFiltered is the most processes a filter can name (see
// Listener.Filter); with more, nothing can be filtered in the kernel.
const MaxFiltered = (bpfMaxInsns - 16) / 2 * chunk / (chunk + 2)

// ErrFilterTooLarge: more processes than MaxFiltered were asked for.
var ErrFilterTooLarge = errors.New("process events filter too large")

const (
	accept = 0xffffffff // the whole datagram
	drop   = 0
)

// filterProgram returns a program that accepts fork events whose parent,
// exec events whose process, and exit events whose process or parent is
// one of pids (thread-group ids); it drops other fork, exec and exit
// events and accepts every other message (subscription replies).
func filterProgram(pids []int) ([]bpf.Instruction, error) {
	if len(pids) > MaxFiltered {
		return nil, fmt.Errorf("filter process events of %d processes: %w (at most %d)", len(pids), ErrFilterTooLarge, MaxFiltered)
	}
	keys := make([]uint32, len(pids))
	for i, pid := range pids {
		keys[i] = bigEndianOf(uint32(pid))
	}
	list := compares(keys)
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offWhat, Size: 4},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: bigEndianOf(procEventFork), SkipTrue: 3},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: bigEndianOf(procEventExec), SkipTrue: 2},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: bigEndianOf(procEventExit), SkipTrue: 2},
		/* 4 */ bpf.RetConstant{Val: accept}, // another kind of message
		// 5: fork or exec: to the process list, past the exit part.
		/* 5 */ bpf.Jump{Skip: uint32(4 + len(list))},
		// 6: exit: is the parent in the list (when the kernel says)?
		/* 6 */ bpf.LoadExtension{Num: bpf.ExtLen},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: lenExitParent, SkipTrue: 1},
		/* 8 */ bpf.Jump{Skip: uint32(1 + len(list))},
		/* 9 */ bpf.LoadAbsolute{Off: offExitParent, Size: 4},
	}
	prog = append(prog, list...)
	prog = append(prog, bpf.LoadAbsolute{Off: offTGID, Size: 4})
	prog = append(prog, list...)
	prog = append(prog, bpf.RetConstant{Val: drop})
	if len(prog) > bpfMaxInsns {
		return nil, fmt.Errorf("filter process events of %d processes: %w", len(pids), ErrFilterTooLarge)
	}
	return prog, nil
}

// compares returns instructions that accept the datagram when the loaded
// word is one of keys and fall through otherwise: chunks of compares that
// each jump to the "accept" after their chunk.
func compares(keys []uint32) []bpf.Instruction {
	var out []bpf.Instruction
	for len(keys) > 0 {
		n := min(len(keys), chunk)
		for i, k := range keys[:n] {
			out = append(out, bpf.JumpIf{Cond: bpf.JumpEqual, Val: k, SkipTrue: uint8(n - i)})
		}
		out = append(out, bpf.Jump{Skip: 1}, bpf.RetConstant{Val: accept})
		keys = keys[n:]
	}
	return out
}

// bigEndianOf returns the value a BPF word load reads where the kernel
// stored v in host byte order.
func bigEndianOf(v uint32) uint32 {
	var b [4]byte
	ne.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}
