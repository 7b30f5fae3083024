package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/sshconfig"
)

// DropInName is the file --fix writes in sshd's drop-in directory.
const DropInName = "50-connwatch.conf"

// BackupSuffix is appended to a file's name for the copy of its previous
// content.
const BackupSuffix = ".connwatch-bak"

// Block markers of the ssh_config block.
const (
	BlockBegin = "# BEGIN connwatch"
	BlockEnd   = "# END connwatch"
)

// ErrInvalid is wrapped when the fixed configuration does not validate;
// the file is then left as it was.
var ErrInvalid = errors.New("fixed configuration does not validate")

// ErrNoDropInDir is wrapped when the sshd config Includes no directory a
// drop-in could go to.
var ErrNoDropInDir = errors.New("no drop-in directory")

// fixable are the only keywords --fix may write: keepalives and the login
// grace time, never anything about who may log in or how.
var fixable = map[string]bool{
	"clientaliveinterval": true, "clientalivecountmax": true, "logingracetime": true,
	"serveraliveinterval": true, "serveralivecountmax": true, "exitonforwardfailure": true,
}

// Result tells what a fix did.
type Result struct {
	File    string
	Backup  string // "" when there was no previous file
	Content []byte
	Changed bool // false when the file already had this content
}

// DropInTarget returns where the server fix goes for sshd config file
// mainConfig: DropInName in the directory of the first top-level Include
// whose pattern would read it (Debian: /etc/ssh/sshd_config.d/*.conf).
func DropInTarget(mainConfig string) (string, error) {
	f, err := sshconfig.ReadFile(mainConfig, sshconfig.Server, sshconfig.SystemDir)
	if err != nil {
		return "", fmt.Errorf("find drop-in directory: %w", err)
	}
	for _, inc := range f.Includes {
		if inc.File != mainConfig || len(inc.Conditions) > 0 {
			continue
		}
		for _, pat := range inc.Args {
			if !filepath.IsAbs(pat) {
				pat = filepath.Join(sshconfig.SystemDir, pat)
			}
			target := filepath.Join(filepath.Dir(pat), DropInName)
			if ok, _ := filepath.Match(pat, target); ok {
				return target, nil
			}
		}
	}
	return "", fmt.Errorf("find drop-in directory: %s has no top-level Include of a directory such as %s/*.conf (add one as its first line, or pass --fix-file): %w",
		mainConfig, filepath.Join(filepath.Dir(mainConfig), "sshd_config.d"), ErrNoDropInDir)
}

// ServerDropIn returns the drop-in text for settings.
func ServerDropIn(settings []Setting) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by connwatch doctor --fix: keepalive and login grace settings.\n")
	b.WriteString("# sshd keeps the first value it reads, so this file must be included\n")
	b.WriteString("# before other settings of the same keywords. Replaced on the next --fix.\n")
	for _, s := range settings {
		if !fixable[strings.ToLower(s.Key)] {
			return nil, fmt.Errorf("write fix: %s is not a keepalive setting, refusing to write it", s.Key)
		}
		fmt.Fprintf(&b, "%s %s\n", s.Key, s.Value)
	}
	return b.Bytes(), nil
}

// ServerFix says where and how the server fix is written and validated.
type ServerFix struct {
	Runner     sshconfig.Runner
	SSHD       string // default sshconfig.SSHDPath
	File       string // the drop-in
	MainConfig string // sshd -t -f; "" for sshd's default
}

// WriteServerFix writes settings to the drop-in: the previous content is
// copied to FILE.connwatch-bak, the new one written atomically and the
// whole configuration checked with sshd -t. When the check fails the
// previous content is put back (or the new file removed) and the error
// wraps ErrInvalid and carries sshd's message. Nothing is reloaded.
func WriteServerFix(ctx context.Context, o ServerFix, settings []Setting) (Result, error) {
	content, err := ServerDropIn(settings)
	if err != nil {
		return Result{}, err
	}
	res := Result{File: o.File, Content: content}
	old, err := os.ReadFile(o.File)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("write fix: %w", err)
	}
	if existed && bytes.Equal(old, content) {
		return res, nil
	}
	if existed {
		res.Backup = o.File + BackupSuffix
		if err := atomicfile.Write(res.Backup, old, 0o644); err != nil {
			return res, fmt.Errorf("write fix: back up: %w", err)
		}
	}
	if err := atomicfile.Write(o.File, content, 0o644); err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	bin := o.SSHD
	if bin == "" {
		bin = sshconfig.SSHDPath
	}
	args := []string{"-t"}
	if o.MainConfig != "" {
		args = append(args, "-f", o.MainConfig)
	}
	if _, verr := o.Runner.Output(ctx, bin, args...); verr != nil {
		var rerr error
		if existed {
			rerr = atomicfile.Write(o.File, old, 0o644)
		} else {
			rerr = os.Remove(o.File)
		}
		if rerr != nil {
			return res, fmt.Errorf("write fix: %w: %w; and restoring %s failed: %w", ErrInvalid, verr, o.File, rerr)
		}
		return res, fmt.Errorf("write fix: %w (%s restored): %w", ErrInvalid, o.File, verr)
	}
	res.Changed = true
	return res, nil
}

// ClientFix says where and how the client fix is written and validated.
type ClientFix struct {
	Runner sshconfig.Runner
	SSH    string // default sshconfig.SSHPath
	File   string // ~/.ssh/config or the -F file
	Host   string
}

// WriteClientFix puts settings for Host into the connwatch block of the
// ssh config file (replacing the block's section for Host, keeping its
// other hosts; the block goes at the top, since ssh keeps the first value
// it reads). The new text is first checked with ssh -G -F on a temporary
// copy, including that the settings take effect; only then is the
// previous file copied to FILE.connwatch-bak and replaced atomically.
func WriteClientFix(ctx context.Context, o ClientFix, settings []Setting) (Result, error) {
	res := Result{File: o.File}
	for _, s := range settings {
		if !fixable[strings.ToLower(s.Key)] {
			return res, fmt.Errorf("write fix: %s is not a keepalive setting, refusing to write it", s.Key)
		}
	}
	if o.Host == "" || strings.ContainsAny(o.Host, " \t\n\"") {
		return res, fmt.Errorf("write fix: bad host %q", o.Host)
	}
	old, err := os.ReadFile(o.File)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("write fix: %w", err)
	}
	content, err := SetBlock(old, o.Host, settings)
	if err != nil {
		return res, fmt.Errorf("write fix: %s: %w", o.File, err)
	}
	res.Content = content
	if existed && bytes.Equal(old, content) {
		return res, nil
	}
	perm := fs.FileMode(0o600)
	if fi, err := os.Stat(o.File); err == nil {
		perm = fi.Mode().Perm()
	}
	dir := filepath.Dir(o.File)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(o.File)+".check*")
	if err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(content)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return res, fmt.Errorf("write fix: %w", werr)
	}
	got, verr := sshconfig.ClientSettings(ctx, o.Runner, sshconfig.ClientOptions{Binary: o.SSH, ConfigFile: tmp.Name(), Host: o.Host})
	if verr != nil {
		return res, fmt.Errorf("write fix: %w, %s left as it was: %w", ErrInvalid, o.File, verr)
	}
	for _, s := range settings {
		if v := got.Get(s.Key); !strings.EqualFold(v, s.Value) {
			return res, fmt.Errorf("write fix: %w, %s left as it was: ssh -G %s gives %s %q, not %q", ErrInvalid, o.File, o.Host, s.Key, v, s.Value)
		}
	}
	if existed {
		res.Backup = o.File + BackupSuffix
		if err := atomicfile.Write(res.Backup, old, perm); err != nil {
			return res, fmt.Errorf("write fix: back up: %w", err)
		}
	}
	if err := atomicfile.Write(o.File, content, perm); err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	res.Changed = true
	return res, nil
}

// SetBlock returns ssh_config text with the connwatch block holding
// settings for host: an existing block is replaced where it is (its
// sections for other hosts kept, host's own merged with settings), else
// a new one goes at the top. The block ends with "Host *" so that global
// lines after it stay global.
func SetBlock(text []byte, host string, settings []Setting) ([]byte, error) {
	lines := strings.SplitAfter(string(text), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	begin, end := -1, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, BlockBegin) && begin < 0:
			begin = i
		case t == BlockEnd && begin >= 0 && end < 0:
			end = i
		}
	}
	if begin >= 0 && end < 0 {
		return nil, fmt.Errorf("line %d: %q without %q", begin+1, BlockBegin, BlockEnd)
	}
	// Sections of the existing block, in order.
	type section struct {
		host     string
		settings []Setting
	}
	var sections []*section
	if begin >= 0 {
		var cur *section
		for _, l := range lines[begin+1 : end] {
			f := strings.Fields(l)
			if len(f) == 0 || strings.HasPrefix(f[0], "#") {
				continue
			}
			if strings.EqualFold(f[0], "host") {
				cur = nil
				if h := strings.Join(f[1:], " "); h != "*" {
					cur = &section{host: h}
					sections = append(sections, cur)
				}
				continue
			}
			if cur != nil {
				cur.settings = append(cur.settings, Setting{f[0], strings.Join(f[1:], " ")})
			}
		}
	}
	var mine *section
	for _, s := range sections {
		if s.host == host {
			mine = s
		}
	}
	if mine == nil {
		mine = &section{host: host}
		sections = append(sections, mine)
	}
	for _, s := range settings {
		replaced := false
		for i, e := range mine.settings {
			if strings.EqualFold(e.Key, s.Key) {
				mine.settings[i], replaced = s, true
			}
		}
		if !replaced {
			mine.settings = append(mine.settings, s)
		}
	}
	var b strings.Builder
	b.WriteString(BlockBegin + " (written by connwatch doctor --fix; replaced on the next --fix)\n")
	b.WriteString("# At the top because ssh keeps the first value it reads.\n")
	for _, s := range sections {
		fmt.Fprintf(&b, "Host %s\n", s.host)
		for _, kv := range s.settings {
			fmt.Fprintf(&b, "  %s %s\n", kv.Key, kv.Value)
		}
	}
	b.WriteString("# Lines below apply to every host again.\nHost *\n")
	b.WriteString(BlockEnd + "\n")
	var out []string
	if begin >= 0 {
		out = append(append(append(out, lines[:begin]...), b.String()), lines[end+1:]...)
	} else {
		out = append([]string{b.String()}, lines...)
	}
	res := strings.Join(out, "")
	if len(res) > 0 && !strings.HasSuffix(res, "\n") {
		res += "\n"
	}
	return []byte(res), nil
}
