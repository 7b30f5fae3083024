// Package sshconfig reads OpenSSH configuration: the effective settings
// that `sshd -T` and `ssh -G` print, and sshd_config/ssh_config files
// themselves (with Include and Match blocks) for when sshd -T cannot run.
// Parsers are pure functions over an io.Reader; running the binaries goes
// through a small Runner so tests can feed recorded real output.
package sshconfig

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Settings are effective settings keyed by lower-case keyword. Keys that
// may appear more than once (localforward, identityfile, hostkey,
// acceptenv, ...) keep every value in order.
type Settings map[string][]string

// Get returns the first value of key, or "".
func (s Settings) Get(key string) string {
	if v := s[strings.ToLower(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// All returns every value of key.
func (s Settings) All(key string) []string { return s[strings.ToLower(key)] }

// Has tells whether key is set.
func (s Settings) Has(key string) bool { return len(s[strings.ToLower(key)]) > 0 }

// ParseEffective parses the output of `sshd -T` or `ssh -G`: one
// "keyword value" line each, keyword in lower case, the value the rest of
// the line. Blank lines are skipped; a line without a value keeps "".
func ParseEffective(r io.Reader) (Settings, error) {
	s := Settings{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		key = strings.ToLower(key)
		if strings.ContainsAny(key, "=\t") {
			return nil, fmt.Errorf("parse settings: line %d: %q is not a keyword", n, key)
		}
		s[key] = append(s[key], strings.TrimSpace(val))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse settings: %w", err)
	}
	return s, nil
}

// ParseTime parses an sshd/ssh time value: seconds ("120"), or a sequence
// of number+unit with units s, m, h, d, w ("1h30m"), case-insensitive.
// "none" (as in ssh -G connecttimeout) is 0.
func ParseTime(v string) (time.Duration, error) {
	v = strings.TrimSpace(strings.ToLower(v))
	if v == "none" {
		return 0, nil
	}
	if v == "" {
		return 0, fmt.Errorf("parse time %q: empty", v)
	}
	var total time.Duration
	for v != "" {
		i := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("parse time %q: expected a number", v)
		}
		n, err := strconv.ParseInt(v[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("parse time %q: %w", v, err)
		}
		unit := time.Second
		v = v[i:]
		if v != "" {
			switch v[0] {
			case 's':
			case 'm':
				unit = time.Minute
			case 'h':
				unit = time.Hour
			case 'd':
				unit = 24 * time.Hour
			case 'w':
				unit = 7 * 24 * time.Hour
			default:
				return 0, fmt.Errorf("parse time %q: unknown unit %q", v, v[0])
			}
			v = v[1:]
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

// MaxStartups is sshd's MaxStartups start:rate:full: beyond Start
// unauthenticated connections sshd refuses Rate percent of new ones,
// rising linearly to all at Full.
type MaxStartups struct{ Start, Rate, Full int }

// ParseMaxStartups parses "10:30:100" or a single number "10" (which means
// refuse everything beyond 10).
func ParseMaxStartups(v string) (MaxStartups, error) {
	parts := strings.Split(strings.TrimSpace(v), ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return MaxStartups{}, fmt.Errorf("parse maxstartups %q: not start[:rate:full]", v)
		}
		nums[i] = n
	}
	switch len(nums) {
	case 1:
		return MaxStartups{Start: nums[0], Rate: 100, Full: nums[0]}, nil
	case 3:
		return MaxStartups{Start: nums[0], Rate: nums[1], Full: nums[2]}, nil
	}
	return MaxStartups{}, fmt.Errorf("parse maxstartups %q: not start[:rate:full]", v)
}

// ParseYes tells whether an ssh yes/no style value is on ("yes", "true").
func ParseYes(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true":
		return true
	}
	return false
}
