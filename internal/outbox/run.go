package outbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/connwatch/connwatch/internal/backoff"
	"github.com/connwatch/connwatch/internal/clock"
)

// Run delivers the pending records with deliver, oldest first, until ctx
// is done, and then returns nil. It hands deliver up to MaxBatch records at
// a time, waits for Enqueue when nothing is pending, and after a failure
// waits (on the clock) from MinBackoff doubling to MaxBackoff, with jitter,
// before trying the same records again; new records do not cut that wait
// short. Progress is written to disk after every delivery, so after a
// crash at most the batch in flight is delivered again.
//
// A sink that fails never makes Run return: Run returns an error only for
// misuse (ErrRunning, ErrClosed). If deliver does not return once ctx is
// done, Run returns anyway and leaves it running; its records stay
// pending.
func (b *Outbox) Run(ctx context.Context, deliver Deliver) error {
	if !b.running.CompareAndSwap(false, true) {
		return fmt.Errorf("run outbox %s: %w", b.name, ErrRunning)
	}
	defer b.running.Store(false)
	defer b.persist()     // what was delivered before ctx was done
	var timer clock.Timer // made at the first failure
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	failures := 0 // consecutive failed attempts
	for {
		if ctx.Err() != nil {
			return nil
		}
		b.persist()
		recs, err := b.batch()
		if err != nil {
			return fmt.Errorf("run outbox %s: %w", b.name, err)
		}
		if len(recs) == 0 {
			b.persist() // records batch dropped on the way
			select {
			case <-ctx.Done():
				return nil
			case <-b.wake:
			}
			continue
		}
		n, ok, err := b.attempt(ctx, deliver, recs)
		if !ok {
			return nil
		}
		if n > 0 {
			b.delivered(recs[:n])
			if failures > 0 {
				b.log.Info("delivering again", "failed_attempts", failures)
			}
			failures = 0
		}
		switch {
		case err == nil && n == len(recs):
		case errors.Is(err, ErrPermanent) && n < len(recs):
			b.refused(recs[n], err)
		default:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("deliver took %d of %d records and returned no error", n, len(recs))
			}
			failures++
			d := b.backoff(failures)
			b.failed(err, failures, d)
			b.persist()
			if timer == nil {
				timer = b.o.Clock.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C():
			}
		}
	}
}

// attempt calls deliver on its own goroutine, so that Run can return when
// ctx is done even if deliver does not. ok is false when Run must return.
func (b *Outbox) attempt(ctx context.Context, deliver Deliver, recs []Record) (n int, ok bool, err error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := deliver(ctx, recs)
		done <- result{n, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		select {
		case r = <-done:
		default:
			b.log.Warn("delivery still running at shutdown: its records stay pending", "records", len(recs))
			return 0, false, nil
		}
	}
	return min(max(r.n, 0), len(recs)), true, r.err
}

// batch returns the next records to deliver, dropping on the way the holes,
// the records past MaxAge and the records that cannot be read.
func (b *Outbox) batch() ([]Record, error) {
	type location struct {
		seq  uint64
		e    entry
		path string
	}
	for {
		now := b.o.Clock.Now()
		var locs []location
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		var aged int
		for b.q.len() > 0 {
			e := b.q.at(0)
			if e.n != 0 && (b.o.MaxAge == 0 || e.time == 0 || now.Sub(time.Unix(0, e.time)) <= b.o.MaxAge) {
				break
			}
			if e.n != 0 {
				aged++
			}
			b.popLocked(1)
		}
		b.stats.Dropped += uint64(aged)
		for i, e := range b.q.entries() {
			if len(locs) == b.o.MaxBatch {
				break
			}
			if e.n == 0 {
				continue
			}
			seq := b.acked + 1 + uint64(i)
			loc := location{seq: seq, e: e}
			if seg := b.segmentFor(seq); seg != nil {
				loc.path = seg.path
			}
			locs = append(locs, loc)
		}
		b.mu.Unlock()
		if aged > 0 {
			b.log.Warn("dropped records older than the maximum age", "dropped", aged, "max_age", b.o.MaxAge)
		}

		// Only Run deletes segments, so they can be read unlocked.
		recs := make([]Record, 0, len(locs))
		var f *os.File
		for _, l := range locs {
			if f == nil || f.Name() != l.path {
				if f != nil {
					f.Close()
				}
				var err error
				if f, err = os.Open(l.path); err != nil {
					f = nil
					b.unreadable(l.seq, fmt.Errorf("read record %d: %w", l.seq, err))
					continue
				}
			}
			r, err := readRecord(f, l.seq, l.e)
			if err != nil {
				b.unreadable(l.seq, err)
				continue
			}
			recs = append(recs, r)
		}
		if f != nil {
			f.Close()
		}
		if len(recs) > 0 || len(locs) == 0 {
			return recs, nil
		}
	}
}

// unreadable drops a record that cannot be read back: retrying cannot help.
func (b *Outbox) unreadable(seq uint64, err error) {
	b.mu.Lock()
	if seq > b.acked {
		i := int(seq - b.acked - 1)
		b.q.buf[b.q.head+i].n = 0
		b.holes++
		b.stats.Dropped++
	}
	b.mu.Unlock()
	b.log.Error("dropped a record that cannot be read back", "seq", seq, "err", err)
}

// delivered marks recs, a delivered prefix of a batch, done.
func (b *Outbox) delivered(recs []Record) {
	now := b.o.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Delivered += uint64(b.ackToLocked(recs[len(recs)-1].Seq))
	b.stats.LastSuccess = now
}

// refused drops a record the sink refused for good.
func (b *Outbox) refused(r Record, err error) {
	now := b.o.Clock.Now()
	b.mu.Lock()
	b.stats.Dropped += uint64(b.ackToLocked(r.Seq))
	b.stats.Failed++
	b.stats.LastError, b.stats.LastFailure = err.Error(), now
	b.mu.Unlock()
	b.log.Error("sink refused a record for good: dropped it", "seq", r.Seq, "key", r.Key, "err", err)
}

// failed records a failed attempt.
func (b *Outbox) failed(err error, failures int, wait time.Duration) {
	now := b.o.Clock.Now()
	b.mu.Lock()
	b.stats.Failed++
	b.stats.LastError, b.stats.LastFailure = err.Error(), now
	pending := b.q.len() - b.holes
	b.mu.Unlock()
	b.log.Warn("delivery failed; will retry", "err", err, "attempt", failures,
		"retry_in", wait.Round(time.Millisecond), "pending", pending)
}

// backoff is the wait after the given number of consecutive failures.
func (b *Outbox) backoff(failures int) time.Duration {
	return backoff.Policy{Min: b.o.MinBackoff, Max: b.o.MaxBackoff}.Wait(failures)
}

// persist writes how far delivery got, if it moved, and deletes the
// segments that hold no pending record any more.
func (b *Outbox) persist() {
	b.mu.Lock()
	acked, durable, closed := b.acked, b.durable, b.closed
	b.mu.Unlock()
	if acked == durable || closed {
		return
	}
	if err := b.writeAck(acked); err != nil {
		b.log.Error("save delivery progress", "err", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.durable = acked
	if !b.closed {
		b.compactLocked()
	}
}
