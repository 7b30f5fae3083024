package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/safefile"
)

// HoldsDir is the inhibit lock directory under the state directory.
const HoldsDir = "holds"

// MaxStateSize caps the saved policy state (a day of one-second
// datapoints is about 90 KB).
const MaxStateSize = 16 << 20

// PrepareStateDir creates the state directory and its lock directory and
// checks that no other user can write the state directory: whoever can
// write policy.json can make the agent stop the machine. It must be
// owned by the agent's user (or root) and not writable by group or
// others, and so must every directory above it (a sticky one like /tmp
// excepted).
func PrepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := safefile.TrustDir(dir, uint32(os.Geteuid())); err != nil {
		return fmt.Errorf("state directory: %w (use a directory only root can write, such as /var/lib/connwatch)", err)
	}
	return hold.EnsureDir(filepath.Join(dir, HoldsDir))
}

// LoadPolicyState reads the saved policy state from dir, if any. The file
// must be a regular file of the agent's user (or root).
func LoadPolicyState(dir string) (*policy.State, error) {
	path := filepath.Join(dir, PolicyFile)
	b, info, err := safefile.Read(path, MaxStateSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if euid := uint32(os.Geteuid()); info.UID != euid && info.UID != 0 {
		return nil, fmt.Errorf("read %s: belongs to uid %d: %w", path, info.UID, safefile.ErrUntrusted)
	}
	var st policy.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &st, nil
}
