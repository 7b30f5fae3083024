package sshconfig

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Directive is one configuration line.
type Directive struct {
	Key  string   // lower case
	Args []string // unquoted
	File string
	Line int
	// Conditions are the Match (or, in ssh_config, Host) blocks the line
	// is in, outermost first: the line applies only when all match. A
	// block of an included file ends with that file.
	Conditions []*Block
}

// Block is a Match line (or a Host line of ssh_config).
type Block struct {
	Keyword  string   // "match" or "host"
	Criteria []string // the rest of the line, unquoted
	File     string
	Line     int
}

func (b *Block) String() string {
	return fmt.Sprintf("%s:%d: %s %s", b.File, b.Line, b.Keyword, strings.Join(b.Criteria, " "))
}

// File is a configuration file with its Includes expanded in place.
type File struct {
	Path       string
	Directives []Directive
	Blocks     []*Block // every Match/Host block, in order
	Included   []string // files read through Include, in order
	// Includes are the Include lines themselves (patterns as written).
	Includes []Directive
}

// Dialect says which program's rules a file follows.
type Dialect int

const (
	// Server is sshd_config: blocks start with Match.
	Server Dialect = iota
	// Client is ssh_config: blocks start with Host or Match.
	Client
)

// ParseError is a syntax error at a file and line.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// ErrIncludeDepth is wrapped when Includes nest too deep (or loop).
var ErrIncludeDepth = errors.New("includes nested too deep")

const maxIncludeDepth = 16

// ReadFile reads a configuration file and the files it Includes. Relative
// Include paths are resolved in baseDir (SystemDir for sshd_config and
// /etc/ssh/ssh_config, ~/.ssh for a user's ssh_config) and may be globs;
// a glob that matches nothing is not an error, as for sshd.
func ReadFile(path string, d Dialect, baseDir string) (*File, error) {
	f := &File{Path: path}
	if err := f.read(path, d, baseDir, nil, 0); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) read(path string, d Dialect, baseDir string, outer []*Block, depth int) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("read %s: %w", path, ErrIncludeDepth)
	}
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer fh.Close()
	return f.parse(fh, path, d, baseDir, outer, depth)
}

// Parse parses configuration text from r named name; Includes are read
// from disk.
func Parse(r io.Reader, name string, d Dialect, baseDir string) (*File, error) {
	f := &File{Path: name}
	if err := f.parse(r, name, d, baseDir, nil, 0); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) parse(r io.Reader, name string, d Dialect, baseDir string, outer []*Block, depth int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	cond := outer
	n := 0
	for sc.Scan() {
		n++
		key, args, err := splitLine(sc.Text())
		if err != nil {
			return &ParseError{File: name, Line: n, Msg: err.Error()}
		}
		if key == "" {
			continue
		}
		switch {
		case key == "match" || (d == Client && key == "host"):
			if len(args) == 0 {
				return &ParseError{File: name, Line: n, Msg: fmt.Sprintf("%s without criteria", key)}
			}
			b := &Block{Keyword: key, Criteria: args, File: name, Line: n}
			f.Blocks = append(f.Blocks, b)
			cond = append(append([]*Block(nil), outer...), b)
		case key == "include":
			if len(args) == 0 {
				return &ParseError{File: name, Line: n, Msg: "Include without a file"}
			}
			f.Includes = append(f.Includes, Directive{Key: key, Args: args, File: name, Line: n, Conditions: cond})
			for _, pat := range args {
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(baseDir, pat)
				}
				matches, err := filepath.Glob(pat)
				if err != nil {
					return &ParseError{File: name, Line: n, Msg: fmt.Sprintf("Include %s: %v", pat, err)}
				}
				sort.Strings(matches)
				for _, m := range matches {
					f.Included = append(f.Included, m)
					if err := f.read(m, d, baseDir, cond, depth+1); err != nil {
						return fmt.Errorf("%s:%d: include: %w", name, n, err)
					}
				}
			}
		default:
			f.Directives = append(f.Directives, Directive{Key: key, Args: args, File: name, Line: n, Conditions: cond})
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// splitLine returns the lower-case keyword and the arguments of a line,
// or "" for blank lines and comments. It accepts "Key value", "Key=value"
// and "Key = value", and double-quoted arguments.
func splitLine(line string) (string, []string, error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, nil
	}
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return strings.ToLower(line), nil, nil
	}
	key := strings.ToLower(line[:i])
	rest := strings.TrimLeft(line[i:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	var args []string
	for rest != "" {
		if rest[0] == '#' {
			break
		}
		var arg string
		if rest[0] == '"' {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return "", nil, fmt.Errorf("%s: unterminated quote", key)
			}
			arg, rest = rest[1:1+end], rest[2+end:]
		} else {
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			arg, rest = rest[:end], rest[end:]
		}
		args = append(args, arg)
		rest = strings.TrimLeft(rest, " \t")
	}
	return key, args, nil
}

// HostNames lists the names that Host lines give literally (no wildcard
// or negation), in file order and each once: the hosts a user can name,
// for shell completion.
func (f *File) HostNames() []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range f.Blocks {
		if b.Keyword != "host" {
			continue
		}
		for _, c := range b.Criteria {
			for _, name := range strings.Split(c, ",") {
				if name == "" || strings.ContainsAny(name, "*?!%") || seen[name] {
					continue
				}
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}
