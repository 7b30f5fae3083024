// Package host reads facts about the machine itself from procfs: when it
// booted and which boot this is.
package host

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BootTime returns when the machine booted. For the live "/proc" it is
// the wall clock minus CLOCK_BOOTTIME, exact to the microsecond (process
// start times count from it); for any other root, the whole second in the
// "btime" line of PROCROOT/stat.
func BootTime(procRoot string) (time.Time, error) {
	if procRoot == "/proc" {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err == nil {
			return time.Now().Add(-time.Duration(ts.Nano())), nil
		}
	}
	b, err := os.ReadFile(procRoot + "/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("read boot time: %w", err)
	}
	t, err := ParseBootTime(b)
	if err != nil {
		return time.Time{}, fmt.Errorf("read boot time from %s/stat: %w", procRoot, err)
	}
	return t, nil
}

// ParseBootTime finds the "btime SECONDS" line of a /proc/stat text.
func ParseBootTime(b []byte) (time.Time, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("parse btime %q: %w", v, err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime line")
}

// BootID returns the kernel's random ID of this boot.
func BootID(procRoot string) (string, error) {
	b, err := os.ReadFile(procRoot + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
