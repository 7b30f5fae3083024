package cloudwatch

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSpoolLineRoundTrip(t *testing.T) {
	for _, p := range []point{{0, 0}, {1772366400, 2}, {1772366460, 0.5}, {-1, math.MaxFloat64}} {
		line := appendLine(nil, p)
		if line[len(line)-1] != '\n' {
			t.Fatalf("%q: no newline", line)
		}
		got, ok := parseLine(line[:len(line)-1])
		if !ok || got != p {
			t.Errorf("%q -> %v %v, want %v", line, got, ok, p)
		}
	}
	if got := string(appendLine(nil, point{1772366400, 2})); got != "1772366400 2 b080c59d\n" {
		t.Errorf("line %q", got)
	}
	for _, bad := range []string{"", "1772366400 2", "1772366400 3 b080c59d", "1772366400  2 b080c59d", "x 2 00000000", "1772366400 2 b080c59d extra"} {
		if p, ok := parseLine([]byte(bad)); ok {
			t.Errorf("%q parsed as %v", bad, p)
		}
	}
}

func TestSpoolRecovery(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SpoolFile)
	good := append(appendLine(nil, point{60, 1}), appendLine(nil, point{120, 0})...)
	// A good line, a damaged one, a good one, and a torn last line.
	var content []byte
	content = appendLine(content, point{60, 1})
	content = append(content, "60 7 00000000\n"...)
	content = appendLine(content, point{120, 0})
	content = append(content, "180 4 1234"...)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	s, res, err := openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if len(res.points) != 2 || res.points[0] != (point{60, 1}) || res.points[1] != (point{120, 0}) || res.corrupt != 1 || !res.torn {
		t.Fatalf("load %+v", res)
	}
	b, _ := os.ReadFile(path)
	if string(b) != string(good) {
		t.Errorf("after recovery the file holds %q, want %q", b, good)
	}
	if err := s.append(point{180, 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.rewrite([]point{{180, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := s.append(point{240, 0}); err != nil {
		t.Fatal(err)
	}
	res2, err := readSpool(path)
	if err != nil || len(res2.points) != 2 || res2.points[0] != (point{180, 3}) || res2.points[1] != (point{240, 0}) {
		t.Errorf("after rewrite and append: %+v %v", res2, err)
	}
	if err := s.rewrite(nil); err != nil {
		t.Fatal(err)
	}
	if s.size() != 0 {
		t.Errorf("size %d after emptying", s.size())
	}
}

func TestPeriods(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var a periods
	var got []closed
	obs := func(s float64, v float64) {
		if c, ok := a.observe(at(s), v, time.Minute); ok {
			got = append(got, c)
		}
	}
	obs(0, 0)
	obs(30, 3)   // a burst of three sessions
	obs(30.1, 0) // gone 100 ms later
	obs(59.9, 2) // two sessions at the end of the minute...
	obs(61, 0)   // ...ended before the next scan: they existed at 12:01:00
	obs(50, 9)   // late: 12:00 is closed
	obs(125, 0)
	if c, ok := a.closeIfDue(at(182), time.Minute, 2*time.Second); !ok || c.start != t0.Add(2*time.Minute) || c.max != 0 {
		t.Fatalf("closeIfDue: %v %v", c, ok)
	}
	obs(179, 5) // late: 12:02 was closed by the timer
	obs(400, 1) // after a gap: nothing carried into 12:06
	c, ok := a.closeNow()
	want := []closed{{t0, 3}, {t0.Add(time.Minute), 2}, {t0.Add(6 * time.Minute), 1}}
	got = append(got, c)
	if !ok || len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("closed %v, want %v", got, want)
	}
}
