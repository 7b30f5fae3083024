// Package cloudwatch publishes the number of SSH sessions to Amazon
// CloudWatch, as a drop-in for the classic recipe, a crontab line
//
//	PATH=/usr/bin:/bin
//	* * * * * aws cloudwatch put-metric-data --namespace EC2 --metric-name "SSH Connections" --dimensions InstanceId=$ID --value $(ps -A x | grep sshd | grep "\[priv\]" | wc -l)
//
// with the CloudWatch alarm "<= 0 for 15 of 15 datapoints" that stops the
// instance. By default it publishes the same metric (namespace EC2, metric
// SSH Connections, dimension InstanceId from the instance metadata service)
// with one value a minute, so existing alarms keep working.
//
// What differs from the recipe:
//
//   - The value of a period is the MAXIMUM number of authenticated sessions
//     that existed at any time during the period (Observe keeps that
//     bookkeeping), not a sample taken once a minute. A session that lived
//     100 ms counts for its minute, and password prompts and bots at the
//     prompt do not count at all (the recipe's "[priv]" counts both).
//   - The value is stamped with the start of its period and sent just after
//     the period ends; the recipe's value carries the time it was sampled.
//   - Datapoints are written to an on-disk spool before any API call and
//     survive CloudWatch outages, network loss and restarts: they are
//     delivered afterwards with their original timestamps, in order, each
//     at most once per request.
//
// Publisher.Run sends them; Stats reports the publisher's health;
// ResetAlarmIfStuck fixes, at agent start, an alarm left in ALARM by the
// last stop (alarm actions run only on state changes). IdleAlarm and
// ClientVPNAlarm build the alarms `connwatch aws setup-alarm` creates.
package cloudwatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	cwapi "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/smithy-go"

	"github.com/connwatch/connwatch/internal/backoff"
	"github.com/connwatch/connwatch/internal/clock"
)

// Defaults: the classic recipe's metric.
const (
	DefaultNamespace  = "EC2"
	DefaultMetricName = "SSH Connections"
	// InstanceIDDimension is the dimension EC2 alarm actions need.
	InstanceIDDimension = "InstanceId"
	// KindDimension carries the session kind of the VPN metrics.
	KindDimension = "Kind"
	DefaultPeriod = time.Minute
	// MaxBatch is PutMetricData's limit of datapoints per call.
	MaxBatch          = 1000
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultCloseGrace is how long after its end a period is closed when
	// no observation from a later period has closed it first.
	DefaultCloseGrace  = 2 * time.Second
	DefaultCallTimeout = 30 * time.Second
	// DefaultShutdownTimeout bounds the last delivery attempt when Run
	// stops.
	DefaultShutdownTimeout = 5 * time.Second
	// MaxAge is how old a datapoint CloudWatch still accepts (two weeks).
	// The publisher drops datapoints a little earlier, at MaxAge minus
	// AgeMargin, so that one accepted by the clock here is not refused by
	// CloudWatch's.
	MaxAge    = 14 * 24 * time.Hour
	AgeMargin = 10 * time.Minute
	// MaxBatchInterval bounds Options.BatchInterval.
	MaxBatchInterval = time.Hour
)

// ErrInvalidOptions is wrapped by every error New returns for bad options.
var ErrInvalidOptions = errors.New("invalid CloudWatch options")

// API is the part of the CloudWatch client the publisher uses; SDK(client)
// is one.
type API interface {
	PutMetricData(context.Context, *cwapi.PutMetricDataInput, ...func(*cwapi.Options)) (*cwapi.PutMetricDataOutput, error)
	DescribeAlarms(context.Context, *cwapi.DescribeAlarmsInput, ...func(*cwapi.Options)) (*cwapi.DescribeAlarmsOutput, error)
	SetAlarmState(context.Context, *cwapi.SetAlarmStateInput, ...func(*cwapi.Options)) (*cwapi.SetAlarmStateOutput, error)
}

// SDK wraps an SDK client as an API. It holds the client's method values,
// not the *cloudwatch.Client, which in an interface would keep every
// CloudWatch operation in the binary (see connect.SDK).
func SDK(c *cwapi.Client) API {
	return sdkClient{put: c.PutMetricData, describe: c.DescribeAlarms, set: c.SetAlarmState}
}

type sdkClient struct {
	put      func(context.Context, *cwapi.PutMetricDataInput, ...func(*cwapi.Options)) (*cwapi.PutMetricDataOutput, error)
	describe func(context.Context, *cwapi.DescribeAlarmsInput, ...func(*cwapi.Options)) (*cwapi.DescribeAlarmsOutput, error)
	set      func(context.Context, *cwapi.SetAlarmStateInput, ...func(*cwapi.Options)) (*cwapi.SetAlarmStateOutput, error)
}

func (s sdkClient) PutMetricData(ctx context.Context, in *cwapi.PutMetricDataInput, optFns ...func(*cwapi.Options)) (*cwapi.PutMetricDataOutput, error) {
	return s.put(ctx, in, optFns...)
}

func (s sdkClient) DescribeAlarms(ctx context.Context, in *cwapi.DescribeAlarmsInput, optFns ...func(*cwapi.Options)) (*cwapi.DescribeAlarmsOutput, error) {
	return s.describe(ctx, in, optFns...)
}

func (s sdkClient) SetAlarmState(ctx context.Context, in *cwapi.SetAlarmStateInput, optFns ...func(*cwapi.Options)) (*cwapi.SetAlarmStateOutput, error) {
	return s.set(ctx, in, optFns...)
}

// Options configure a Publisher. Only SpoolDir is required.
type Options struct {
	// SpoolDir holds the on-disk buffer (cloudwatch.spool) and its lock.
	// Use a directory of its own that survives reboots, e.g.
	// /var/lib/connwatch/cloudwatch.
	SpoolDir string

	// Namespace and MetricName default to EC2 and SSH Connections.
	Namespace  string
	MetricName string
	// InstanceID is the InstanceId dimension; Region the CloudWatch
	// region. Empty: read from the instance metadata service (IMDSv2).
	InstanceID string
	Region     string
	// Dimensions are added to InstanceId (a key "InstanceId" replaces it).
	// An alarm matches only the exact set of dimensions, so setup-alarm
	// needs the same ones.
	Dimensions map[string]string

	// Period is the length of a datapoint's period: 1s, 5s, 10s or 30s
	// (published as high resolution, StorageResolution 1) or a multiple
	// of a minute. Default one minute.
	Period time.Duration
	// BatchInterval holds datapoints and sends them together, e.g. five
	// minutes: one PutMetricData call for five one-minute datapoints.
	// Zero (the default) sends each datapoint as soon as its period
	// closes. A datapoint with sessions after one without is sent at once
	// whatever the batching, so an alarm never sees idle data while
	// someone's login waits in the batch. A multiple of Period, at most
	// MaxBatchInterval.
	BatchInterval time.Duration
	// MaxBatch caps the datapoints in one PutMetricData call; default and
	// maximum 1000 (the API's limit).
	MaxBatch int

	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// after a failed call; defaults 1s and 5m. The delay doubles per
	// consecutive failure and is drawn from [d/2, d). It resets after a
	// success.
	MinBackoff, MaxBackoff time.Duration
	// CloseGrace: see DefaultCloseGrace.
	CloseGrace time.Duration
	// CallTimeout bounds one API call (default 30s); ShutdownTimeout the
	// last attempt when Run stops (default 5s).
	CallTimeout     time.Duration
	ShutdownTimeout time.Duration

	// AWSConfig are extra options for config.LoadDefaultConfig.
	AWSConfig []func(*config.LoadOptions) error
	// Client replaces the CloudWatch client built from the AWS config.
	Client API
	Clock  clock.Clock
	Logger *slog.Logger
	// Rand returns numbers in [0, 1) for the backoff jitter; default
	// math/rand/v2.
	Rand func() float64
}

// Stats is the publisher's view of its own health.
type Stats struct {
	// InstanceID is the InstanceId dimension, once known.
	InstanceID string
	// Pending datapoints are in the spool, not yet accepted by CloudWatch;
	// OldestPending is the earliest timestamp among them.
	Pending       int
	OldestPending time.Time
	SpoolBytes    int64
	// Recorded, Delivered: datapoints since New.
	Recorded  uint64
	Delivered uint64
	// Calls are PutMetricData calls made; Errors the calls (and instance
	// metadata look-ups) that failed.
	Calls               uint64
	Errors              uint64
	ConsecutiveFailures int
	LastSuccess         time.Time
	LastError           string
	LastErrorAt         time.Time
	NextRetry           time.Time
	// Datapoints dropped: older than CloudWatch accepts, refused by
	// CloudWatch as invalid, or not a valid count when recorded.
	DroppedTooOld   uint64
	DroppedRejected uint64
	DroppedInvalid  uint64
	// SpoolErrors counts failed writes to the spool; the datapoints stay
	// in memory and are still sent.
	SpoolErrors uint64
}

// Publisher publishes one value per period to CloudWatch.
type Publisher struct {
	o       Options
	clk     clock.Clock
	log     *slog.Logger
	highRes bool
	// batchCount is how many datapoints make a full batch.
	batchCount int
	kick       chan struct{}

	tmu    sync.Mutex // guards target resolution
	target *target

	mu      sync.Mutex
	spool   *spool
	pending []point
	periods periods
	stats   Stats
	// Delivery state.
	failures      int
	retryAt       time.Time
	lastAttempt   time.Time
	newData       bool      // recorded since the last attempt
	batchStart    time.Time // when the oldest unsent datapoint was recorded
	urgent        bool      // sessions appeared after an idle value: send now
	flushAll      bool      // send everything pending now (backlog)
	lastValue     float64   // last value sent successfully
	haveLastValue bool
	closed        bool
}

// target is where datapoints go, resolved once.
type target struct {
	api        API
	instanceID string
	region     string
	dims       []types.Dimension
}

// New opens the spool (creating SpoolDir) and returns a publisher. It does
// not touch the network: the instance id and region are looked up by Run.
// Datapoints left in the spool by an earlier run are sent first.
func New(o Options) (*Publisher, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	sp, res, err := openSpool(o.SpoolDir)
	if err != nil {
		return nil, err
	}
	p := &Publisher{
		o:          o,
		clk:        o.Clock,
		log:        o.Logger,
		highRes:    o.Period < time.Minute,
		batchCount: 1,
		kick:       make(chan struct{}, 1),
		spool:      sp,
		pending:    res.points,
	}
	if o.BatchInterval > 0 {
		p.batchCount = min(int(o.BatchInterval/o.Period), o.MaxBatch)
	}
	if res.corrupt > 0 {
		p.log.Warn("discarded damaged lines of the CloudWatch spool", "path", sp.path, "lines", res.corrupt)
	}
	if res.torn {
		p.log.Info("discarded the partial last line of the CloudWatch spool (a crash while appending)", "path", sp.path)
	}
	if len(p.pending) > 0 {
		p.flushAll = true
		p.log.Info("datapoints from an earlier run are waiting for CloudWatch", "count", len(p.pending),
			"oldest", time.Unix(p.pending[0].ts, 0).UTC())
	}
	return p, nil
}

func (o *Options) setDefaults() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrInvalidOptions)
	}
	if o.SpoolDir == "" {
		return bad("spool directory is required")
	}
	o.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	o.MetricName = cmp.Or(o.MetricName, DefaultMetricName)
	o.Period = cmp.Or(o.Period, DefaultPeriod)
	o.MaxBatch = cmp.Or(o.MaxBatch, MaxBatch)
	o.MinBackoff = cmp.Or(o.MinBackoff, DefaultMinBackoff)
	o.MaxBackoff = cmp.Or(o.MaxBackoff, DefaultMaxBackoff)
	o.CloseGrace = cmp.Or(o.CloseGrace, DefaultCloseGrace)
	o.CallTimeout = cmp.Or(o.CallTimeout, DefaultCallTimeout)
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("sink", "cloudwatch")
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	switch {
	case len(o.Namespace) > 255 || len(o.Namespace) >= 4 && o.Namespace[:4] == "AWS/":
		return bad("namespace %q: at most 255 characters, not starting with AWS/", o.Namespace)
	case len(o.MetricName) > 255:
		return bad("metric name %q: at most 255 characters", o.MetricName)
	case !ValidPeriod(o.Period):
		return bad("period %v: must be 1s, 5s, 10s, 30s or a multiple of 1m", o.Period)
	case o.BatchInterval < 0 || o.BatchInterval > MaxBatchInterval || o.BatchInterval%o.Period != 0:
		return bad("batch interval %v: must be a multiple of the period (%v) and at most %v", o.BatchInterval, o.Period, MaxBatchInterval)
	case o.MaxBatch < 1 || o.MaxBatch > MaxBatch:
		return bad("max batch %d: must be between 1 and %d", o.MaxBatch, MaxBatch)
	case o.MinBackoff < 0 || o.MaxBackoff < o.MinBackoff:
		return bad("backoff %v..%v: min must be positive and at most max", o.MinBackoff, o.MaxBackoff)
	}
	dims := len(o.Dimensions)
	if _, ok := o.Dimensions[InstanceIDDimension]; !ok {
		dims++
	}
	if dims > 30 {
		return bad("%d dimensions: CloudWatch allows 30", dims)
	}
	for k, v := range o.Dimensions {
		if k == "" || v == "" || len(k) > 255 || len(v) > 1024 {
			return bad("dimension %q=%q: name and value must be non-empty", k, v)
		}
	}
	return nil
}

// ValidPeriod tells whether d can be a publishing period: 1s, 5s, 10s, 30s
// (high resolution) or a positive multiple of one minute.
func ValidPeriod(d time.Duration) bool {
	switch d {
	case time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second:
		return true
	}
	return d > 0 && d%time.Minute == 0
}

// Close releases the spool. Datapoints not yet delivered stay in it for
// the next run.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.spool.close()
}

// Record adds the datapoint for the period starting at periodStart (it is
// truncated to the period): the maximum number of sessions that existed at
// any time during that period. It is written to the spool, fsync'd, before
// Record returns; Run sends it. A negative, NaN or infinite value is
// dropped and counted. Use either Record or Observe, not both.
func (p *Publisher) Record(periodStart time.Time, sessions float64) {
	p.mu.Lock()
	p.recordLocked(periodStart, sessions)
	p.mu.Unlock()
	p.wake()
}

func (p *Publisher) recordLocked(periodStart time.Time, v float64) {
	if p.closed {
		return
	}
	ts := periodStart.Truncate(p.o.Period)
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		p.stats.DroppedInvalid++
		p.log.Error("dropped an invalid session count", "period", ts.UTC(), "value", v)
		return
	}
	pt := point{ts.Unix(), v}
	if err := p.spool.append(pt); err != nil {
		p.stats.SpoolErrors++
		p.log.Error("writing the CloudWatch spool failed; the datapoint is kept in memory only", "err", err)
	}
	if len(p.pending) == 0 {
		p.batchStart = p.clk.Now()
	}
	p.pending = append(p.pending, pt)
	p.stats.Recorded++
	p.newData = true
	if v > 0 && (!p.haveLastValue || p.lastValue == 0) {
		p.urgent = true
	}
}

// Observe tells the publisher how many sessions exist at now. It keeps the
// maximum per period and records it when the period ends: on the first
// observation of a later period, or CloseGrace after the end when none
// comes (Run watches for that). The count last observed before a period
// begins counts for that period too, since those sessions existed at its
// start; a period without any observation, and not following one
// directly, gets no datapoint (CloudWatch then sees missing data, as from
// a stopped agent). Call it from the agent's loop, at least once a period;
// it returns at once except when a period closes, when it writes the
// spool.
func (p *Publisher) Observe(now time.Time, count int) {
	p.mu.Lock()
	dp, ok := p.periods.observe(now, float64(count), p.o.Period)
	if ok {
		p.recordLocked(dp.start, dp.max)
	}
	p.mu.Unlock()
	if ok {
		p.wake()
	}
}

func (p *Publisher) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the publisher's health.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Pending = len(p.pending)
	if len(p.pending) > 0 {
		oldest := p.pending[0].ts
		for _, pt := range p.pending {
			oldest = min(oldest, pt.ts)
		}
		st.OldestPending = time.Unix(oldest, 0).UTC()
	}
	st.ConsecutiveFailures = p.failures
	if p.failures > 0 {
		st.NextRetry = p.retryAt
	}
	if !p.closed {
		st.SpoolBytes = p.spool.size()
	}
	return st
}

// Run sends datapoints until ctx ends, then closes the period in progress
// and makes one last attempt, bounded by ShutdownTimeout, to deliver what
// is pending. Whatever is still undelivered stays in the spool. Run
// returns nil when ctx is cancelled; it keeps retrying through every
// CloudWatch or network failure.
func (p *Publisher) Run(ctx context.Context) error {
	timer := p.clk.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := p.step(ctx)
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(p.clk.Now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			p.shutdown(ctx)
			return nil
		case <-timer.C():
		case <-p.kick:
		}
	}
}

// step does everything due at the clock's now and returns when it wants to
// run again (zero: only when woken).
func (p *Publisher) step(ctx context.Context) time.Time {
	now := p.clk.Now()
	p.mu.Lock()
	if dp, ok := p.periods.closeIfDue(now, p.o.Period, p.o.CloseGrace); ok {
		p.recordLocked(dp.start, dp.max)
	}
	p.mu.Unlock()

	if p.currentTarget() == nil {
		p.mu.Lock()
		waiting := p.failures > 0 && now.Before(p.retryAt)
		p.mu.Unlock()
		if waiting {
			return p.nextWake(now)
		}
		if err := p.resolve(ctx); err != nil {
			if ctx.Err() != nil {
				return time.Time{}
			}
			p.mu.Lock()
			p.failLocked(now, fmt.Errorf("look up instance: %w", err))
			p.mu.Unlock()
			return p.nextWake(now)
		}
	}

	p.mu.Lock()
	p.dropTooOldLocked(now)
	p.mu.Unlock()
	for ctx.Err() == nil && p.due(now) {
		if !p.sendOnce(ctx, now) {
			break
		}
	}
	return p.nextWake(now)
}

// due tells whether a PutMetricData call should be made at now.
func (p *Publisher) due(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return false
	}
	if p.failures > 0 {
		// Retry after the backoff, or at the latest when a new
		// datapoint arrives a full cadence after the last attempt: an
		// outage never delays a datapoint more than a normal send would.
		return !now.Before(p.retryAt) || p.newData && !now.Before(p.lastAttempt.Add(p.cadence()))
	}
	return p.flushAll || p.urgent || len(p.pending) >= p.batchCount ||
		!now.Before(p.batchStart.Add(p.o.BatchInterval))
}

// cadence is the normal time between two sends.
func (p *Publisher) cadence() time.Duration { return max(p.o.Period, p.o.BatchInterval) }

func (p *Publisher) nextWake(now time.Time) time.Time {
	resolved := p.currentTarget() != nil
	p.mu.Lock()
	defer p.mu.Unlock()
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if p.periods.open {
		earliest(p.periods.start.Add(p.o.Period + p.o.CloseGrace))
	}
	switch {
	case p.failures > 0 && (len(p.pending) > 0 || !resolved):
		earliest(p.retryAt)
	case len(p.pending) > 0 && p.o.BatchInterval > 0:
		earliest(p.batchStart.Add(p.o.BatchInterval))
	}
	if !next.IsZero() && !next.After(now) {
		next = now.Add(time.Millisecond)
	}
	return next
}

// dropTooOldLocked drops datapoints CloudWatch would refuse as too old.
func (p *Publisher) dropTooOldLocked(now time.Time) {
	cutoff := now.Add(-(MaxAge - AgeMargin)).Unix()
	keep := p.pending[:0]
	var dropped []point
	for _, pt := range p.pending {
		if pt.ts < cutoff {
			dropped = append(dropped, pt)
			continue
		}
		keep = append(keep, pt)
	}
	if len(dropped) == 0 {
		return
	}
	p.pending = keep
	p.stats.DroppedTooOld += uint64(len(dropped))
	p.log.Warn("dropped datapoints older than CloudWatch accepts", "count", len(dropped),
		"oldest", time.Unix(dropped[0].ts, 0).UTC(), "newest", time.Unix(dropped[len(dropped)-1].ts, 0).UTC(),
		"max_age", MaxAge, "dropped_total", p.stats.DroppedTooOld)
	p.compactLocked()
}

func (p *Publisher) compactLocked() {
	if p.closed {
		return
	}
	if err := p.spool.rewrite(p.pending); err != nil {
		p.stats.SpoolErrors++
		p.log.Error("compacting the CloudWatch spool failed; delivered datapoints may be sent again after a restart", "err", err)
	}
}

// sendOnce sends one batch from the head of the queue and reports whether
// it was delivered (or dropped as invalid) so that sending may go on.
func (p *Publisher) sendOnce(ctx context.Context, now time.Time) bool {
	p.mu.Lock()
	n := batchLen(p.pending, p.o.MaxBatch)
	batch := slices.Clone(p.pending[:n])
	p.lastAttempt, p.newData = now, false
	p.mu.Unlock()

	tg := p.currentTarget()
	done, err := p.deliver(ctx, tg, batch)

	p.mu.Lock()
	defer p.mu.Unlock()
	if done > 0 {
		p.lastValue, p.haveLastValue = batch[done-1].v, true
		p.pending = slices.Delete(p.pending, 0, done)
		p.compactLocked()
	}
	if err != nil {
		if ctx.Err() == nil {
			p.failLocked(now, err)
		}
		return false
	}
	if p.failures > 0 {
		p.log.Info("CloudWatch reachable again", "after_failures", p.failures, "pending", len(p.pending))
		p.flushAll = true
	}
	p.failures, p.retryAt = 0, time.Time{}
	p.stats.LastSuccess = now
	p.urgent = false
	if len(p.pending) == 0 {
		p.flushAll = false
	} else {
		p.batchStart = now
	}
	return true
}

// batchLen is how many points from the head of ps make one request: up to
// max distinct timestamps.
func batchLen(ps []point, max int) int {
	seen := make(map[int64]struct{}, min(len(ps), max))
	for i, pt := range ps {
		if _, ok := seen[pt.ts]; !ok {
			if len(seen) == max {
				return i
			}
			seen[pt.ts] = struct{}{}
		}
	}
	return len(ps)
}

// deliver sends batch and returns how many of its points, from the head,
// are done with: accepted, or refused as invalid and dropped. A refused
// batch is split in halves until the refused datapoints are alone, so one
// bad datapoint does not take good ones with it. err is the retryable
// error that stopped delivery.
func (p *Publisher) deliver(ctx context.Context, tg *target, batch []point) (int, error) {
	err := p.put(ctx, tg, batch)
	if err == nil {
		p.mu.Lock()
		p.stats.Delivered += uint64(len(batch))
		p.mu.Unlock()
		return len(batch), nil
	}
	if !permanent(err) {
		return 0, err
	}
	if len(batch) == 1 || batchLen(batch, 1) == len(batch) {
		p.mu.Lock()
		p.stats.DroppedRejected += uint64(len(batch))
		total := p.stats.DroppedRejected
		p.mu.Unlock()
		p.log.Error("CloudWatch refused a datapoint; dropped it", "period", time.Unix(batch[0].ts, 0).UTC(),
			"value", batch[0].v, "err", err, "dropped_total", total)
		return len(batch), nil
	}
	mid := len(batch) / 2
	done, err := p.deliver(ctx, tg, batch[:mid])
	if err != nil || done < mid {
		return done, err
	}
	rest, err := p.deliver(ctx, tg, batch[mid:])
	return mid + rest, err
}

// put makes one PutMetricData call. Points with the same timestamp are
// merged into one datum with their maximum, so no period appears twice in
// a request.
func (p *Publisher) put(ctx context.Context, tg *target, batch []point) error {
	var data []types.MetricDatum
	index := map[int64]int{}
	for _, pt := range batch {
		if i, ok := index[pt.ts]; ok {
			*data[i].Value = max(*data[i].Value, pt.v)
			continue
		}
		index[pt.ts] = len(data)
		d := types.MetricDatum{
			MetricName: aws.String(p.o.MetricName),
			Dimensions: tg.dims,
			Timestamp:  aws.Time(time.Unix(pt.ts, 0).UTC()),
			Value:      aws.Float64(pt.v),
			Unit:       types.StandardUnitCount,
		}
		if p.highRes {
			d.StorageResolution = aws.Int32(1)
		}
		data = append(data, d)
	}
	cctx, cancel := context.WithTimeout(ctx, p.o.CallTimeout)
	defer cancel()
	_, err := tg.api.PutMetricData(cctx, &cwapi.PutMetricDataInput{Namespace: aws.String(p.o.Namespace), MetricData: data})
	p.mu.Lock()
	p.stats.Calls++
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("put %d datapoints: %w", len(data), err)
	}
	return nil
}

// failLocked counts a failure and schedules the retry.
func (p *Publisher) failLocked(now time.Time, err error) {
	p.failures++
	p.stats.Errors++
	p.stats.LastError, p.stats.LastErrorAt = err.Error(), now
	d := backoff.Policy{Min: p.o.MinBackoff, Max: p.o.MaxBackoff, Rand: p.o.Rand}.Wait(p.failures)
	p.retryAt = now.Add(d)
	level := slog.LevelDebug
	if p.failures == 1 || p.failures%10 == 0 {
		level = slog.LevelWarn
	}
	p.log.Log(context.Background(), level, "CloudWatch unavailable; will retry", "err", err,
		"failures", p.failures, "retry_in", d, "pending", len(p.pending))
}

// shutdown closes the period in progress and makes a last delivery
// attempt.
func (p *Publisher) shutdown(ctx context.Context) {
	p.mu.Lock()
	if dp, ok := p.periods.closeNow(); ok {
		p.recordLocked(dp.start, dp.max)
	}
	p.dropTooOldLocked(p.clk.Now())
	pending := len(p.pending)
	p.flushAll = true
	p.mu.Unlock()
	if pending == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.ShutdownTimeout)
	defer cancel()
	if p.currentTarget() == nil {
		if err := p.resolve(sctx); err != nil {
			p.log.Info("stopping with datapoints in the spool", "pending", pending, "err", err)
			return
		}
	}
	now := p.clk.Now()
	for sctx.Err() == nil && p.Stats().Pending > 0 {
		if !p.sendOnce(sctx, now) {
			break
		}
	}
	if n := p.Stats().Pending; n > 0 {
		p.log.Info("stopping with datapoints in the spool; they are sent at the next start", "pending", n)
	}
}

func (p *Publisher) currentTarget() *target {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	return p.target
}

// resolve finds the instance id and region (IMDSv2 unless given) and
// builds the client. The client makes one attempt per call: the
// publisher's own backoff, on its clock, does the retrying.
func (p *Publisher) resolve(ctx context.Context) error {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.target != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.CallTimeout)
	defer cancel()
	id, region := p.o.InstanceID, p.o.Region
	var cfg aws.Config
	if p.o.Client == nil || id == "" || region == "" {
		var err error
		cfg, err = config.LoadDefaultConfig(ctx, p.o.AWSConfig...)
		if err != nil {
			return fmt.Errorf("load AWS config: %w", err)
		}
	}
	if id == "" || region == "" {
		doc, err := imds.NewFromConfig(cfg).GetInstanceIdentityDocument(ctx, nil)
		if err != nil {
			return fmt.Errorf("read instance identity from IMDS: %w", err)
		}
		if id == "" {
			id = doc.InstanceID
		}
		if region == "" {
			region = doc.Region
		}
		if id == "" || region == "" {
			return fmt.Errorf("read instance identity from IMDS: no instance id or region (%q, %q)", doc.InstanceID, doc.Region)
		}
	}
	api := p.o.Client
	if api == nil {
		api = SDK(cwapi.NewFromConfig(cfg, func(o *cwapi.Options) {
			o.Region = region
			o.Retryer = aws.NopRetryer{}
		}))
	}
	p.target = &target{api: api, instanceID: id, region: region, dims: dimensions(id, p.o.Dimensions)}
	p.mu.Lock()
	p.stats.InstanceID = id
	p.mu.Unlock()
	p.log.Info("publishing to CloudWatch", "namespace", p.o.Namespace, "metric", p.o.MetricName,
		"instance", id, "region", region, "period", p.o.Period, "batch", p.o.BatchInterval)
	return nil
}

// dimensions is InstanceId=id plus extra, sorted by name after InstanceId.
func dimensions(id string, extra map[string]string) []types.Dimension {
	var dims []types.Dimension
	if _, ok := extra[InstanceIDDimension]; !ok {
		dims = append(dims, types.Dimension{Name: aws.String(InstanceIDDimension), Value: aws.String(id)})
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		dims = append(dims, types.Dimension{Name: aws.String(k), Value: aws.String(extra[k])})
	}
	return dims
}

// permanent tells whether err is CloudWatch refusing the request's content,
// so that sending it again cannot succeed: the datapoints are dropped.
// Everything else is retried: throttling, 5xx, network errors, and also
// refusals that are about the caller rather than the data (AccessDenied,
// expired or invalid credentials, a skewed clock), which an operator can
// fix while the datapoints wait, until they are too old.
func permanent(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InvalidParameterValue", "InvalidParameterValueException",
			"InvalidParameterCombination", "InvalidParameterCombinationException",
			"MissingParameter", "MissingRequiredParameterException",
			"ValidationError", "ValidationException", "InvalidFormat", "InvalidFormatFault",
			"SerializationException", "RequestEntityTooLarge":
			return true
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestEntityTooLarge
}
