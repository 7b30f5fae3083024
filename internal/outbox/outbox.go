// Package outbox is a durable, ordered queue of records waiting to be
// delivered to one notification sink. Enqueue appends a record to a file
// and syncs it before it returns, and never waits for the sink; Run hands
// the records to the sink in order, retrying with backoff until the sink
// takes them, and remembers on disk how far it got. Records survive
// restarts and crashes, so delivery is at least once: a record handed to the
// sink just before a crash is handed over again after it, and receivers use
// Record.Key to drop the copy.
//
// Each outbox lives in its own directory, DIR/NAME, which holds:
//
//	00000000000000000001.jsonl  segments: records as JSON lines, named by the
//	00000000000000004097.jsonl  sequence number of their first record
//	acked.json                  {"acked": N}: every record up to N is done
//	lock                        flock'd while the outbox is open
//
// A record line is {"seq":N,"key":"…","time":"RFC 3339","body":{…}}. Lines
// are only ever appended; a segment is deleted once every record in it is
// done (delivered, or dropped and logged), the last one included, so an
// outbox that has caught up holds no segment at all. acked.json is
// replaced atomically after each delivery. Open discards a torn last line
// (a crash in the middle of an append) and reports it.
//
// Memory: the bodies stay on disk and are read back a batch at a time. The
// outbox keeps 16 bytes per pending record (offset, length and time, to
// drop and report the oldest without reading it): with the queue's spare
// capacity, about 190 KB per 10,000 pending records
// (BenchmarkPendingMemory).
//
// Cost: Enqueue is one write and one fsync (plus a file creation and a
// directory fsync when it starts a segment); each delivery adds an atomic
// rewrite of acked.json. Open reads every pending record once to check it
// (about 15 ms per 1,000).
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
)

// Record is one queued item, as Deliver receives it.
type Record struct {
	// Seq numbers the outbox's records in the order they were enqueued.
	Seq uint64 `json:"seq"`
	// Key identifies the record to receivers, which use it to drop the
	// copies that at-least-once delivery can produce.
	Key string `json:"key"`
	// Time is the time given to Enqueue (the event's time, not the
	// delivery's).
	Time time.Time `json:"time"`
	// Body is the JSON encoding of what was enqueued.
	Body json.RawMessage `json:"body"`
}

// Deliver hands recs, in order, to a sink. It returns how many of them,
// counted from the first, the sink has taken. An error wrapping
// ErrPermanent says the record after those can never be delivered: it is
// dropped (logged and counted) instead of retried. Deliver must return
// soon after ctx is done.
type Deliver func(ctx context.Context, recs []Record) (delivered int, err error)

// Defaults for Options.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultMaxRecords = 100_000
)

// MaxRecordSize bounds one encoded record line.
const MaxRecordSize = 1 << 20

// Options configure an outbox.
type Options struct {
	// Clock times backoff and MaxAge; nil means the system clock.
	Clock clock.Clock
	// MaxBatch is how many records one Deliver call gets at most;
	// default 1.
	MaxBatch int
	// MinBackoff and MaxBackoff bound the wait after a failed delivery,
	// which doubles from MinBackoff (default 1s) up to MaxBackoff (default
	// 5m), with jitter. A success resets it.
	MinBackoff, MaxBackoff time.Duration
	// MaxAge drops records whose Time is older than this when they come
	// up for delivery, logging how many; 0 keeps them forever.
	MaxAge time.Duration
	// MaxRecords bounds the pending records: when an Enqueue goes past
	// it, the oldest are dropped, logged and counted in Stats.Dropped.
	// 0 means DefaultMaxRecords.
	MaxRecords int
	// Logger gets drops, failures and recoveries; nil means slog.Default().
	Logger *slog.Logger
}

// Stats says how an outbox is doing. Counters count since Open.
type Stats struct {
	// Pending is the number of records waiting for delivery.
	Pending int
	// Delivered counts records the sink took.
	Delivered uint64
	// Failed counts failed delivery attempts: retried ones, and
	// permanent refusals (whose record is dropped instead).
	Failed uint64
	// Dropped counts records given up on: past MaxRecords or MaxAge,
	// refused permanently by the sink, or unreadable on disk.
	Dropped uint64
	// Torn counts torn record lines Open discarded: appends a crash
	// interrupted, whose Enqueue had not returned.
	Torn uint64
	// LastSuccess is when Deliver last delivered something.
	LastSuccess time.Time
	// LastError is the latest delivery failure; LastFailure is when it
	// happened. They are kept after the sink recovers.
	LastError   string
	LastFailure time.Time
	// OldestPending is the Time of the oldest pending record; zero when
	// nothing is pending.
	OldestPending time.Time
}

// Errors callers can branch on.
var (
	// ErrPermanent marks a delivery error that retrying cannot fix (a
	// webhook answering 400): Run drops the record instead of retrying.
	ErrPermanent = errors.New("permanent delivery failure")
	// ErrClosed is returned by Enqueue and Run after Close.
	ErrClosed = errors.New("outbox closed")
	// ErrRunning is returned by a second Run while one is running.
	ErrRunning = errors.New("outbox already running")
	// ErrLocked is returned by Open when another process (or another
	// Outbox in this one) has the outbox open.
	ErrLocked = errors.New("outbox in use")
	// ErrTooLarge is returned by Enqueue for a record over MaxRecordSize.
	ErrTooLarge = errors.New("record too large")
)

const (
	ackFileName  = "acked.json"
	lockFileName = "lock"
	segSuffix    = ".jsonl"
	// defaultSegmentSize is the size past which appends start a new
	// segment, so that delivered records are deleted while later ones
	// are still pending.
	defaultSegmentSize = 4 << 20
)

// Outbox is one sink's queue. Enqueue, Stats and Close may be called from
// any goroutine; Run from one at a time.
type Outbox struct {
	name, dir string
	o         Options
	log       *slog.Logger
	lock      *os.File
	segMax    int64
	wake      chan struct{}
	running   atomic.Bool

	mu     sync.Mutex
	closed bool
	segs   []*segment // oldest first; appends go to the last one
	tail   *os.File   // the last segment, open for appending; nil until needed
	// tailDirty: a failed append may have left part of a line at the end
	// of the tail, so the next line starts with a newline to end it.
	tailDirty bool
	nextSeq   uint64
	// acked: every record up to this one is done (delivered or dropped).
	// durable is the value acked.json holds.
	acked, durable uint64
	// q has one entry per sequence number after acked, before nextSeq.
	q     queue
	holes int // entries in q that are holes
	stats Stats
}

// Open opens, creating it if needed, the outbox NAME in the spool
// directory DIR and recovers the records still pending in it.
func Open(dir, name string, o Options) (*Outbox, error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("open outbox %q: invalid name", name)
	}
	if o.MaxAge < 0 || o.MaxRecords < 0 || o.MaxBatch < 0 || o.MinBackoff < 0 || o.MaxBackoff < 0 {
		return nil, fmt.Errorf("open outbox %s: negative option", name)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.MaxRecords == 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	b := &Outbox{
		name:   name,
		dir:    filepath.Join(dir, name),
		o:      o,
		log:    o.Logger.With("outbox", name),
		segMax: defaultSegmentSize,
		wake:   make(chan struct{}, 1),
	}
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", name, err)
	}
	lock, err := os.OpenFile(filepath.Join(b.dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", name, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open outbox %s: %s: %w", name, b.dir, ErrLocked)
		}
		return nil, fmt.Errorf("open outbox %s: lock %s: %w", name, b.dir, err)
	}
	b.lock = lock
	if err := b.recover(); err != nil {
		b.closeFiles()
		return nil, fmt.Errorf("open outbox %s: %w", name, err)
	}
	return b, nil
}

// Name is the outbox's name, as given to Open.
func (b *Outbox) Name() string { return b.name }

// Dir is the directory holding the outbox's files.
func (b *Outbox) Dir() string { return b.dir }

// Enqueue adds a record with the JSON encoding of body. The record is
// written and synced to disk (fsync) before Enqueue returns, so an event
// Enqueue accepted survives a crash of the agent or of the machine; the
// cost is one fsync per call (two when it starts a segment). Enqueue
// never waits for delivery. When the outbox is over MaxRecords, the oldest
// records are dropped.
//
// When Enqueue fails the record may still have reached the disk, and then
// it is delivered after a restart; that is the at-least-once side of a
// failure, and key lets the receiver drop a retried copy.
func (b *Outbox) Enqueue(key string, t time.Time, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", b.name, err)
	}
	// Everything but the sequence number is encoded outside the lock.
	rest, err := json.Marshal(lineRest{Key: key, Time: t, Body: raw})
	if err != nil {
		return fmt.Errorf("encode %s record: %w", b.name, err)
	}
	if len(rest)+32 > MaxRecordSize {
		return fmt.Errorf("enqueue %s record of %d bytes: %w", b.name, len(rest), ErrTooLarge)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("enqueue %s record: %w", b.name, ErrClosed)
	}
	seq := b.nextSeq
	e, burned, err := b.appendLocked(seq, rest)
	if err != nil {
		if burned {
			// Part of the line is on disk: its sequence number is not
			// used again, and a hole keeps q aligned with the numbers.
			b.nextSeq++
			b.q.push(entry{})
			b.holes++
		}
		return fmt.Errorf("enqueue %s record: %w", b.name, err)
	}
	b.nextSeq++
	e.time = unixNano(t)
	b.q.push(e)
	b.dropOverflowLocked()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// dropOverflowLocked drops the oldest records past MaxRecords.
func (b *Outbox) dropOverflowLocked() {
	over := b.q.len() - b.holes - b.o.MaxRecords
	if over <= 0 {
		return
	}
	var dropped int
	for dropped < over {
		if b.q.at(0).n != 0 {
			dropped++
		}
		b.popLocked(1)
	}
	b.stats.Dropped += uint64(dropped)
	b.log.Warn("outbox full: dropped the oldest records", "dropped", dropped, "max_records", b.o.MaxRecords)
}

// popLocked marks the n oldest pending records done.
func (b *Outbox) popLocked(n int) {
	for i := range n {
		if b.q.at(i).n == 0 {
			b.holes--
		}
	}
	b.q.pop(n)
	b.acked += uint64(n)
}

// ackToLocked marks every record up to seq done and reports how many
// records (not holes) that newly covered.
func (b *Outbox) ackToLocked(seq uint64) int {
	if seq <= b.acked {
		return 0
	}
	n := int(seq - b.acked)
	var recs int
	for i := range n {
		if b.q.at(i).n != 0 {
			recs++
		}
	}
	b.popLocked(n)
	return recs
}

// Stats returns the outbox's counters and state.
func (b *Outbox) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Pending = b.q.len() - b.holes
	for i := range b.q.len() {
		if e := b.q.at(i); e.n != 0 {
			if e.time != 0 {
				s.OldestPending = time.Unix(0, e.time).UTC()
			}
			break
		}
	}
	return s
}

// Close closes the outbox's files and releases its lock. Stop Run first:
// a Run still going returns ErrClosed at its next record.
func (b *Outbox) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	return b.closeFiles()
}

func (b *Outbox) closeFiles() error {
	var errs []error
	b.mu.Lock()
	if b.tail != nil {
		errs = append(errs, b.tail.Close())
		b.tail = nil
	}
	b.mu.Unlock()
	if b.lock != nil {
		errs = append(errs, b.lock.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close outbox %s: %w", b.name, err)
	}
	return nil
}

// Time bounds of int64 nanoseconds since the epoch.
var (
	minNano = time.Unix(0, -1<<63+1)
	maxNano = time.Unix(0, 1<<63-1)
)

// unixNano returns t in nanoseconds since the epoch, or 0 (unknown) when
// it does not fit.
func unixNano(t time.Time) int64 {
	if t.Before(minNano) || t.After(maxNano) {
		return 0
	}
	return t.UnixNano()
}

// entry locates one pending record: 16 bytes, the only per-record memory
// the outbox holds.
type entry struct {
	time int64  // Record.Time in Unix nanoseconds; 0 if unknown
	off  uint32 // offset of the line in its segment
	n    uint32 // length of the line with its newline; 0 for a hole
}

// A hole is a sequence number without a record to deliver: an append that
// failed, or a record lost to damage on disk (counted when found). Holes
// are skipped silently.

// queue is a FIFO of entries.
type queue struct {
	buf  []entry
	head int
}

func (q *queue) len() int         { return len(q.buf) - q.head }
func (q *queue) at(i int) entry   { return q.buf[q.head+i] }
func (q *queue) push(e entry)     { q.buf = append(q.buf, e) }
func (q *queue) entries() []entry { return q.buf[q.head:] }

func (q *queue) pop(n int) {
	q.head += n
	switch {
	case q.head == len(q.buf):
		if cap(q.buf) > 4096 {
			q.buf = nil // let a drained backlog's memory go
		} else {
			q.buf = q.buf[:0]
		}
		q.head = 0
	case q.head >= 1024 && q.head*2 >= len(q.buf):
		n := copy(q.buf, q.buf[q.head:])
		q.buf = q.buf[:n]
		q.head = 0
	}
}
