package outbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/atomicfile"
)

// segment is one file of record lines. Its records have the sequence
// numbers from first up to the next segment's first.
type segment struct {
	first uint64
	path  string
	size  int64 // bytes of the file that lines occupy
}

// lineRest is a record line without its sequence number.
type lineRest struct {
	Key  string          `json:"key"`
	Time time.Time       `json:"time"`
	Body json.RawMessage `json:"body"`
}

// encodeLine puts seq in front of rest (`{"key":…}`) and a newline after
// it; after a failed append it first ends the partial line.
func encodeLine(seq uint64, rest []byte, newlineFirst bool) []byte {
	line := make([]byte, 0, len(rest)+32)
	if newlineFirst {
		line = append(line, '\n')
	}
	line = append(line, `{"seq":`...)
	line = strconv.AppendUint(line, seq, 10)
	line = append(line, ',')
	line = append(line, rest[1:]...)
	return append(line, '\n')
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// appendLocked appends the line of record seq (rest is the line without
// the sequence number) to the last segment, or to a new one when there is
// none or it is full, and syncs it. When it fails, burned says that part
// of the line may be left in the file, so seq must not be used again.
func (b *Outbox) appendLocked(seq uint64, rest []byte) (e entry, burned bool, err error) {
	if b.tail != nil && b.segs[len(b.segs)-1].size >= b.segMax {
		// Every append was synced: closing is all that is left.
		b.tail.Close()
		b.tail = nil
	}
	if b.tail == nil {
		if err := b.openTailLocked(seq); err != nil {
			return entry{}, false, err
		}
	}
	seg := b.segs[len(b.segs)-1]
	off := seg.size
	n, err := b.tail.Write(encodeLine(seq, rest, b.tailDirty))
	if err == nil {
		err = b.tail.Sync()
		if err != nil {
			err = fmt.Errorf("sync %s: %w", seg.path, err)
		}
	} else {
		err = fmt.Errorf("write %s: %w", seg.path, err)
	}
	if err != nil {
		// Take the line back. If that fails too, the next line starts
		// with a newline, and Open skips what is left of this one.
		if terr := b.tail.Truncate(off); terr != nil {
			seg.size += int64(n)
			b.tailDirty = true
			return entry{}, true, err
		}
		return entry{}, false, err
	}
	seg.size += int64(n)
	if b.tailDirty {
		off++
		n--
		b.tailDirty = false
	}
	return entry{off: uint32(off), n: uint32(n)}, false, nil
}

// openTailLocked opens the last segment for appending, or starts a new
// segment whose first record is seq when there is none or it is full.
func (b *Outbox) openTailLocked(seq uint64) error {
	if k := len(b.segs); k > 0 && b.segs[k-1].size < b.segMax {
		seg := b.segs[k-1]
		f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		b.tail = f
		return nil
	}
	seg := &segment{first: seq, path: filepath.Join(b.dir, segmentName(seq))}
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("create segment: %w", err)
	}
	// Only a damaged earlier run leaves a file by this name; what is in
	// it is not a record (its lines were skipped when it was read).
	seg.size = st.Size()
	b.tailDirty = seg.size > 0
	// The new file's name must survive a crash as well as its lines.
	if err := syncDir(b.dir); err != nil {
		f.Close()
		os.Remove(seg.path)
		return fmt.Errorf("create segment: %w", err)
	}
	b.tail = f
	b.segs = append(b.segs, seg)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// segmentFor returns the segment holding seq.
func (b *Outbox) segmentFor(seq uint64) *segment {
	i := sort.Search(len(b.segs), func(i int) bool { return b.segs[i].first > seq })
	if i == 0 {
		return nil
	}
	return b.segs[i-1]
}

// ackState is the content of acked.json.
type ackState struct {
	Acked uint64 `json:"acked"`
}

// writeAck records on disk that every record up to acked is done.
func (b *Outbox) writeAck(acked uint64) error {
	return atomicfile.WriteJSON(filepath.Join(b.dir, ackFileName), ackState{Acked: acked}, 0o600)
}

// compactLocked deletes the segments whose records are all durably done.
func (b *Outbox) compactLocked() {
	for len(b.segs) > 0 {
		seg := b.segs[0]
		last := b.nextSeq - 1 // the last record of the last segment
		if len(b.segs) > 1 {
			last = b.segs[1].first - 1
		}
		if last > b.durable {
			return
		}
		if len(b.segs) == 1 && b.tail != nil {
			b.tail.Close()
			b.tail = nil
			b.tailDirty = false
		}
		// If the removal is lost in a crash, Open skips the records
		// (they are acked) and deletes the file again.
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			b.log.Warn("delete delivered segment", "path", seg.path, "err", err)
			return
		}
		b.segs = b.segs[1:]
	}
}

// recover reads acked.json and the segments, rebuilds the queue of pending
// records and cuts off torn lines.
func (b *Outbox) recover() error {
	var st ackState
	if err := atomicfile.ReadJSON(filepath.Join(b.dir, ackFileName), &st); err != nil && !atomicfile.IsNotExist(err) {
		// Without the mark every record is delivered again: receivers
		// drop the copies by key, which is better than losing any.
		b.log.Error("damaged acknowledgement file: delivering every record again", "err", err)
		st = ackState{}
	}
	b.acked, b.durable = st.Acked, st.Acked
	b.nextSeq = st.Acked + 1

	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, "."+ackFileName+".tmp") {
			// A replacement of acked.json interrupted by a crash.
			os.Remove(filepath.Join(b.dir, name))
			continue
		}
		num, ok := strings.CutSuffix(name, segSuffix)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil || first == 0 {
			b.log.Warn("ignoring unexpected file in outbox", "file", name)
			continue
		}
		b.segs = append(b.segs, &segment{first: first, path: filepath.Join(b.dir, name)})
	}
	sort.Slice(b.segs, func(i, j int) bool { return b.segs[i].first < b.segs[j].first })

	var lost uint64
	for i, seg := range b.segs {
		limit := uint64(1<<64 - 1)
		if i+1 < len(b.segs) {
			limit = b.segs[i+1].first
		}
		l, err := b.scan(seg, limit)
		if err != nil {
			return err
		}
		lost += l
	}
	if lost > 0 {
		b.stats.Dropped += lost
		b.log.Error("records lost to damage in the outbox files", "lost", lost)
	}
	b.compactLocked()
	b.dropOverflowLocked()
	if n := b.q.len() - b.holes; n > 0 {
		b.log.Info("recovered pending records", "pending", n, "next_seq", b.nextSeq)
	}
	return nil
}

// scan reads one segment, whose records have sequence numbers below
// limit, and queues the pending ones. A damaged line is skipped; the
// records it hid are holes, and scan returns how many. Whatever follows
// the last good line (a torn append) is cut off the file.
func (b *Outbox) scan(seg *segment, limit uint64) (lost uint64, err error) {
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("read segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("read segment: %w", err)
	}
	if st.Size() >= 1<<32 {
		return 0, fmt.Errorf("read segment %s: %d bytes is more than a segment can hold", seg.path, st.Size())
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var off, good int64 // good: end of the last good line
	var damaged int     // complete lines that are not records
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break // a last line without a newline is torn
		}
		if err != nil {
			return 0, fmt.Errorf("read segment %s: %w", seg.path, err)
		}
		start := off
		off += int64(len(line))
		if len(bytes.TrimSpace(line)) == 0 {
			continue // ends a partial line left by a failed append
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Seq < seg.first || r.Seq >= limit {
			damaged++
			continue
		}
		if r.Seq <= b.acked {
			good = off
			continue // done already
		}
		if r.Seq < b.nextSeq {
			damaged++ // a second copy of a record: never written that way
			continue
		}
		good = off
		// Sequence numbers skipped over were lost with damaged lines.
		for ; b.nextSeq < r.Seq; b.nextSeq++ {
			b.q.push(entry{})
			b.holes++
			lost++
		}
		b.q.push(entry{time: unixNano(r.Time), off: uint32(start), n: uint32(len(line))})
		b.nextSeq = r.Seq + 1
	}
	seg.size = st.Size()
	if good < seg.size {
		// A torn append, and any damaged lines after the last good one.
		if err := f.Truncate(good); err != nil {
			return 0, fmt.Errorf("cut torn record off %s: %w", seg.path, err)
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("cut torn record off %s: %w", seg.path, err)
		}
		b.stats.Torn++
		b.log.Warn("discarded a torn record at the end of a segment (an append interrupted by a crash)",
			"file", filepath.Base(seg.path), "bytes", seg.size-good)
		seg.size = good
	}
	if damaged > 0 {
		b.log.Error("skipped damaged lines in a segment", "file", filepath.Base(seg.path), "lines", damaged)
	}
	return lost, nil
}

// readRecord reads the record seq, which e locates in seg.
func readRecord(f *os.File, seq uint64, e entry) (Record, error) {
	buf := make([]byte, e.n)
	if _, err := f.ReadAt(buf, int64(e.off)); err != nil {
		return Record{}, fmt.Errorf("read record %d: %w", seq, err)
	}
	var r Record
	if err := json.Unmarshal(buf, &r); err != nil {
		return Record{}, fmt.Errorf("decode record %d: %w", seq, err)
	}
	if r.Seq != seq {
		return Record{}, fmt.Errorf("decode record %d: found record %d in its place", seq, r.Seq)
	}
	return r, nil
}
