package host

import (
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
	id, err := BootID("/proc")
	if err != nil || len(id) != 36 {
		t.Errorf("boot id %q %v", id, err)
	}
}
