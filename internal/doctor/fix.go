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
	"syscall"

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
	File string
	// Target is the file written when File is a symbolic link (the link
	// stays); else File.
	Target  string
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
// copied to FILE.connwatch-bak, the new one written atomically (through
// FILE when it is a symbolic link, keeping the target's mode and owner:
// atomicfile.WriteThrough) and the whole configuration checked with
// sshd -t. When the check fails the
// previous content is put back (or the new file removed) and the error
// wraps ErrInvalid and carries sshd's message. Nothing is reloaded.
func WriteServerFix(ctx context.Context, o ServerFix, settings []Setting) (Result, error) {
	content, err := ServerDropIn(settings)
	if err != nil {
		return Result{}, err
	}
	res := Result{File: o.File, Content: content}
	cur, err := readThrough(o.File)
	if err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	res.Target = cur.target
	if cur.existed && bytes.Equal(cur.data, content) {
		return res, nil
	}
	if cur.existed {
		res.Backup = o.File + BackupSuffix
		if err := cur.backUp(res.Backup); err != nil {
			return res, fmt.Errorf("write fix: back up: %w", err)
		}
	}
	if _, err := atomicfile.WriteThrough(o.File, content, 0o644); err != nil {
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
		if cur.existed {
			_, rerr = atomicfile.WriteThrough(o.File, cur.data, 0o644)
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
// When FILE is a symbolic link (a ~/.ssh/config kept with dotfiles) the
// file it leads to is replaced and the link stays; the file and its
// backup keep the owner and mode the file had, so root fixing a user's
// file leaves it the user's. A link to nothing, or a link owned by
// someone else than its target's owner, is an error and nothing is
// written.
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
	if err := os.MkdirAll(filepath.Dir(o.File), 0o700); err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	cur, err := readThrough(o.File)
	if err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	res.Target = cur.target
	content, err := SetBlock(cur.data, o.Host, settings)
	if err != nil {
		return res, fmt.Errorf("write fix: %s: %w", o.File, err)
	}
	res.Content = content
	if cur.existed && bytes.Equal(cur.data, content) {
		return res, nil
	}
	// The copy ssh -G checks goes in a private temporary directory, not
	// next to the file: the agent may run as root in a user's ~/.ssh.
	tmp, err := os.CreateTemp("", "connwatch-ssh-config.check*")
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
	if cur.existed {
		res.Backup = o.File + BackupSuffix
		if err := cur.backUp(res.Backup); err != nil {
			return res, fmt.Errorf("write fix: back up: %w", err)
		}
	}
	if _, err := atomicfile.WriteThrough(o.File, content, 0o600); err != nil {
		return res, fmt.Errorf("write fix: %w", err)
	}
	res.Changed = true
	return res, nil
}

// current is a config file as found before a fix: path may be a
// symbolic link (dotfiles), target is the file it leads to.
type current struct {
	target  string
	existed bool
	data    []byte
	info    fs.FileInfo
}

// readThrough reads path through its symbolic links, with
// atomicfile.Target's checks: a link to nothing, or a link owned by
// someone else than its target's owner, is an error before anything is
// written.
func readThrough(path string) (current, error) {
	target, fi, err := atomicfile.Target(path)
	if err != nil {
		return current{}, err
	}
	c := current{target: target, info: fi}
	if fi == nil {
		return c, nil
	}
	if c.data, err = os.ReadFile(target); err != nil {
		return current{}, err
	}
	c.existed = true
	return c, nil
}

// backUp writes the previous content to path (a link there is replaced,
// never followed) with the mode and owner of the file it came from.
func (c current) backUp(path string) error {
	if st, ok := c.info.Sys().(*syscall.Stat_t); ok {
		return atomicfile.WriteAs(path, c.data, c.info.Mode().Perm(), int(st.Uid), int(st.Gid))
	}
	return atomicfile.Write(path, c.data, c.info.Mode().Perm())
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
