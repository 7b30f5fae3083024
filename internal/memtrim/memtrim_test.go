package memtrim

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// The header lines are captured from `connwatch tunnel` (static build,
// /tmp/cws on fe:00), with lines added for a shared mapping, another
// file, the same inode on another device, a replaced executable and a
// read-only mapping with changed pages (a PIE build's RELRO); each is
// followed by smaps lines, of which only Anonymous counts.
const capturedSmaps = `00400000-00e45000 r-xp 00000000 fe:00 9978113                            /tmp/cws
Size:              10516 kB
Rss:                2304 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00e45000-0193a000 r--p 00a45000 fe:00 9978113                            /tmp/cws
Rss:                4588 kB
Anonymous:             0 kB
0193a000-019b8000 rw-p 0153a000 fe:00 9978113                            /tmp/cws
Anonymous:           440 kB
019b8000-03a01000 rw-p 00000000 00:00 0 
Anonymous:          3588 kB
2e3790000000-2e3791c00000 ---p 00000000 00:00 0 
7f2a30000000-7f2a30001000 r--s 00000000 fe:00 9978113                    /tmp/cws
Anonymous:             0 kB
7f2a30001000-7f2a30002000 r--p 00000000 fe:00 9978114                    /tmp/other
Anonymous:             0 kB
7f2a30002000-7f2a30003000 r--p 00000000 fe:01 9978113                    /other-fs/file
Anonymous:             0 kB
7f2a30003000-7f2a30004000 r--p 00001000 fe:00 9978113                    /tmp/cws (deleted)
Anonymous:             0 kB
7f2a30004000-7f2a30080000 r--p 00002000 fe:00 9978113                    /tmp/cws
Rss:                 496 kB
Anonymous:           484 kB
7f2a30080000-7f2a30090000 r--p 00080000 fe:00 9978113                    /tmp/cws
Rss:                   0 kB
7f2a78a5b000-7f2a78a5f000 r--p 00000000 00:00 0                          [vvar]
7f2a78a61000-7f2a78a63000 r-xp 00000000 00:00 0                          [vdso]
7ffe6100a000-7ffe6102b000 rw-p 00000000 00:00 0                          [stack]
`

func TestCleanReadOnlyMappings(t *testing.T) {
	got, err := cleanReadOnlyMappings(strings.NewReader(capturedSmaps), unix.Mkdev(0xfe, 0), 9978113)
	if err != nil {
		t.Fatal(err)
	}
	// Not the one with changed pages, nor the one whose Anonymous is
	// not known.
	want := []span{{0x400000, 0xe45000}, {0xe45000, 0x193a000}, {0x7f2a30003000, 0x7f2a30004000}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(span{})); diff != "" {
		t.Errorf("cleanReadOnlyMappings (-want +got):\n%s", diff)
	}
	if _, err := cleanReadOnlyMappings(strings.NewReader("0040zz00-00e45000 r-xp 00000000 fe:00 9978113 /tmp/cws\n"), unix.Mkdev(0xfe, 0), 9978113); err == nil {
		t.Error("a bad address range of the executable is not an error")
	}
}

// exeRSS sums the resident kB of this test binary's read-only and
// read-write mappings, from /proc/self/smaps.
func exeRSS(t *testing.T) (readOnly, writable int) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var cur *int
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-"):
			cur = nil
			if fields[5] == exe {
				if fields[1][1] == 'w' {
					cur = &writable
				} else {
					cur = &readOnly
				}
			}
		case len(fields) >= 2 && fields[0] == "Rss:" && cur != nil:
			kb, _ := strconv.Atoi(fields[1])
			*cur += kb
		}
	}
	return readOnly, writable
}

// changed is data the test changes before the trim: a trim that touched
// the data segment would bring back the value from the file.
var changed = []int{1, 2, 3}

// This test binary, like connwatch, maps much of itself while it starts;
// after Executable the read-only part holds only what ran since, and
// what the process wrote is intact.
func TestExecutableGivesBackPages(t *testing.T) {
	changed[1] = 42
	before, _ := exeRSS(t)
	res, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := exeRSS(t)
	t.Logf("read-only mappings of the executable: %d kB resident before, %d kB after; %d ranges, %d bytes advised; VmRSS %d -> %d kB",
		before, after, res.Ranges, res.Bytes, res.RSSBefore>>10, res.RSSAfter>>10)
	if res.Ranges < 1 || res.Bytes <= 0 {
		t.Fatalf("Executable advised %d ranges of %d bytes", res.Ranges, res.Bytes)
	}
	// What comes back depends on the kernel (fault-around, whole large
	// folios mapped at once), not on this package: without the trim
	// nothing would leave, as the process only ran more code since.
	if before < 256 || after >= before {
		t.Errorf("resident read-only pages of the executable: %d kB before, %d kB after; want fewer after", before, after)
	}
	if changed[1] != 42 {
		t.Errorf("data written before the trim is %v now", changed)
	}
	if res.RSSBefore <= 0 || res.RSSAfter <= 0 || res.RSSAfter >= res.RSSBefore {
		t.Errorf("VmRSS %d -> %d bytes, want it lower after", res.RSSBefore, res.RSSAfter)
	}
}

// A position-independent build (as distributions build Go programs) has
// a read-only segment the loader relocated (RELRO): its pages are private
// copies, and dropping them would bring back unrelocated pointers and
// crash the process at its next allocation. The test binary, built PIE,
// runs the test above.
func TestExecutableInPIEBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a PIE test binary")
	}
	goBin := testproc.RequireBinary(t, "memtrim", filepath.Join(runtime.GOROOT(), "bin", "go"))
	bin := filepath.Join(t.TempDir(), "memtrim-pie.test")
	if out, err := exec.Command(goBin, "test", "-c", "-buildmode=pie", "-o", bin, "github.com/connwatch/connwatch/internal/memtrim").CombinedOutput(); err != nil {
		t.Fatalf("go test -c -buildmode=pie: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-test.run", "^TestExecutableGivesBackPages$", "-test.v").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestExecutableGivesBackPages") {
		t.Fatalf("the PIE build: %v\n%s", err, out)
	}
}
