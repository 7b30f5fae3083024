package cloudwatch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/atomicfile"
)

// Spool file names inside Options.SpoolDir.
const (
	SpoolFile = "cloudwatch.spool"
	lockFile  = "cloudwatch.lock"
)

// ErrSpoolLocked means another process has the spool directory open.
var ErrSpoolLocked = errors.New("spool is in use by another process")

// point is one datapoint waiting for delivery: the start of its period in
// Unix seconds and the number of sessions.
type point struct {
	ts int64
	v  float64
}

// spool is the on-disk buffer. Every datapoint is appended as one line and
// fsync'd before anything is sent:
//
//	1772366400 2 5e1c0b2a
//
// (period start in Unix seconds, value, CRC-32 of the first two fields).
// After a delivery the file is rewritten without the delivered lines:
// truncated when nothing is left, else replaced whole by rename, so a crash
// leaves either the old or the new content. A crash between a successful
// PutMetricData and that rewrite sends the batch again after the restart
// (at least once delivery; with the Maximum statistic a repeated value
// changes nothing). A torn last line, from a crash in the middle of an
// append, is discarded when the file is read.
type spool struct {
	path string
	f    *os.File
	lock *os.File
	// dirty: the file may hold lines that memory does not (a failed
	// rewrite) or miss some (a failed append); the next compaction
	// rewrites it from memory.
	dirty bool
}

// loadResult says what reading an existing spool found.
type loadResult struct {
	points  []point
	corrupt int  // lines that failed their checksum or did not parse
	torn    bool // a last line without its newline
}

func openSpool(dir string) (*spool, loadResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, loadResult{}, fmt.Errorf("open spool: %w", err)
	}
	lk, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, loadResult{}, fmt.Errorf("open spool: %w", err)
	}
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lk.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, loadResult{}, fmt.Errorf("open spool %s: %w", dir, ErrSpoolLocked)
		}
		return nil, loadResult{}, fmt.Errorf("open spool %s: lock: %w", dir, err)
	}
	s := &spool{path: filepath.Join(dir, SpoolFile), lock: lk}
	res, err := readSpool(s.path)
	if err != nil {
		lk.Close()
		return nil, loadResult{}, err
	}
	if res.corrupt > 0 || res.torn {
		if err := atomicfile.Write(s.path, encodePoints(res.points), 0o600); err != nil {
			lk.Close()
			return nil, loadResult{}, fmt.Errorf("open spool: rewrite: %w", err)
		}
	}
	if err := s.reopen(); err != nil {
		lk.Close()
		return nil, loadResult{}, err
	}
	return s, res, nil
}

func readSpool(path string) (loadResult, error) {
	var res loadResult
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("read spool: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			res.torn = true
			break
		}
		if len(line) > 0 {
			if p, ok := parseLine(line[:len(line)-1]); ok {
				res.points = append(res.points, p)
			} else {
				res.corrupt++
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read spool: %w", err)
		}
	}
	return res, nil
}

func appendLine(b []byte, p point) []byte {
	start := len(b)
	b = strconv.AppendInt(b, p.ts, 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, p.v, 'g', -1, 64)
	sum := crc32.ChecksumIEEE(b[start:])
	b = append(b, ' ')
	b = fmt.Appendf(b, "%08x", sum)
	return append(b, '\n')
}

func parseLine(line []byte) (point, bool) {
	f := bytes.Fields(line)
	if len(f) != 3 || len(f[2]) != 8 {
		return point{}, false
	}
	sum, err := strconv.ParseUint(string(f[2]), 16, 32)
	if err != nil || uint32(sum) != crc32.ChecksumIEEE(line[:len(f[0])+1+len(f[1])]) {
		return point{}, false
	}
	ts, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return point{}, false
	}
	v, err := strconv.ParseFloat(string(f[1]), 64)
	if err != nil {
		return point{}, false
	}
	return point{ts, v}, true
}

func encodePoints(ps []point) []byte {
	b := make([]byte, 0, len(ps)*24)
	for _, p := range ps {
		b = appendLine(b, p)
	}
	return b
}

func (s *spool) reopen() error {
	if s.f != nil {
		s.f.Close()
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		s.f = nil
		return fmt.Errorf("open spool: %w", err)
	}
	s.f = f
	return nil
}

// append writes p and syncs it to disk.
func (s *spool) append(p point) error {
	if s.f == nil {
		if err := s.reopen(); err != nil {
			s.dirty = true
			return err
		}
	}
	if _, err := s.f.Write(appendLine(nil, p)); err != nil {
		s.dirty = true
		return fmt.Errorf("append to spool: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		s.dirty = true
		return fmt.Errorf("append to spool: sync: %w", err)
	}
	return nil
}

// rewrite makes the file hold exactly rest.
func (s *spool) rewrite(rest []point) error {
	if len(rest) == 0 && s.f != nil {
		if err := s.f.Truncate(0); err != nil {
			s.dirty = true
			return fmt.Errorf("compact spool: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			s.dirty = true
			return fmt.Errorf("compact spool: sync: %w", err)
		}
		s.dirty = false
		return nil
	}
	if err := atomicfile.Write(s.path, encodePoints(rest), 0o600); err != nil {
		s.dirty = true
		return fmt.Errorf("compact spool: %w", err)
	}
	s.dirty = false
	return s.reopen()
}

// size is the file's length in bytes, -1 when unknown.
func (s *spool) size() int64 {
	if s.f == nil {
		return -1
	}
	fi, err := s.f.Stat()
	if err != nil {
		return -1
	}
	return fi.Size()
}

func (s *spool) close() error {
	var err error
	if s.f != nil {
		err = s.f.Close()
		s.f = nil
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return err
}
