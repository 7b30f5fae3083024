package procevents

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterProgram runs the filter in x/net/bpf's virtual machine, which
// reads packets like the kernel (big-endian loads, a load past the end
// drops), over datagrams built as the kernel sends them.
func TestFilterProgram(t *testing.T) {
	for _, n := range []int{0, 1, 3, chunk - 1, chunk, chunk + 1, 3*chunk + 7, MaxFiltered} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			// Watched: 1000, 1002, ... (n of them); 999, 1001 are not.
			pids := make([]int, n)
			for i := range pids {
				pids[i] = 1000 + 2*i
			}
			prog, err := filterProgram(pids)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatalf("NewVM: %v", err)
			}
			last := uint32(1000 + 2*(n-1))
			type tc struct {
				name string
				msg  []byte
				want bool
			}
			cases := []tc{
				{"fork by an unwatched parent", forkMsg(1001, 1001, 5001, 5001), false},
				{"exec of an unwatched process", execMsg(1001, 1001), false},
				{"exit of an unwatched child of an unwatched parent", exitMsg(5001, 5001, 0, 17, 1001, 1001), false},
				{"exit without parent fields (before 4.18), unwatched", truncated(procEventExit, procHdrLen+exitLen, 5001, 5001, 0, 17), false},
				{"subscription reply", proc(procEventNone, 0, 0), true},
				{"uid change", proc(0x4, 0, 1001, 1001, 0, 0), true},
			}
			if n > 0 {
				cases = append(cases,
					tc{"fork by a watched parent", forkMsg(1000, 1000, 5001, 5001), true},
					tc{"fork by the last watched parent", forkMsg(last, last, 5001, 5001), true},
					tc{"thread of a watched process forks", forkMsg(7777, last, 5001, 5001), true},
					tc{"exec of a watched process", execMsg(last, last), true},
					tc{"exit of a watched process", exitMsg(1000, 1000, 0, 17, 1, 1), true},
					tc{"exit of a child of a watched process", exitMsg(5001, 5001, 0, 17, last, last), true},
					tc{"exit of a watched process, before 4.18", truncated(procEventExit, procHdrLen+exitLen, last, last, 0, 17), true},
					tc{"fork of a watched child by an unwatched parent", forkMsg(1001, 1001, 1000, 1000), false},
				)
			}
			for _, c := range cases {
				got, err := vm.Run(c.msg)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if (got != 0) != c.want {
					t.Errorf("%s: filter returned %d, want accepted=%v", c.name, got, c.want)
				}
			}
		})
	}
	if _, err := filterProgram(make([]int, MaxFiltered+1)); !errors.Is(err, ErrFilterTooLarge) {
		t.Errorf("%d pids: %v, want ErrFilterTooLarge", MaxFiltered+1, err)
	}
}
