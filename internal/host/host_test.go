package host

import (
	"os"
	"testing"
	"time"
)

func TestParseBootTime(t *testing.T) {
	got, err := ParseBootTime([]byte("cpu  1 2 3\nintr 0\nbtime 1763768400\nprocesses 9\n"))
	if err != nil || !got.Equal(time.Unix(1763768400, 0)) {
		t.Errorf("got %v %v", got, err)
	}
	if _, err := ParseBootTime([]byte("cpu 1\n")); err == nil {
		t.Error("no btime: want error")
	}
	if _, err := ParseBootTime([]byte("btime x\n")); err == nil {
		t.Error("bad btime: want error")
	}
}

func TestLive(t *testing.T) {
	bt, err := BootTime("/proc")
	if err != nil || bt.After(time.Now()) || bt.Before(time.Now().AddDate(-5, 0, 0)) {
		t.Errorf("boot time %v %v", bt, err)
	}
	// The exact boot time agrees with the kernel's whole-second btime.
	b, _ := os.ReadFile("/proc/stat")
	whole, err := ParseBootTime(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := bt.Sub(whole); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("exact boot time %v is %v from btime %v", bt, d, whole)
	}
	id, err := BootID("/proc")
	if err != nil || len(id) != 36 {
		t.Errorf("boot id %q %v", id, err)
	}
}
