package cloudwatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	cwapi "github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// logBuffer collects log output from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type harness struct {
	t    *testing.T
	srv  *awstest.Server
	clk  *clock.Fake
	dir  string
	logs *logBuffer
	pub  *cloudwatch.Publisher
	// sessions is what Observe sees.
	sessions int
}

// newHarness starts the loopback AWS on a fake clock, points the SDK's
// standard settings at it and opens a publisher whose backoff takes the
// middle of its jitter range.
func newHarness(t *testing.T, o cloudwatch.Options) *harness {
	t.Helper()
	h := &harness{t: t, clk: clock.NewFake(t0), dir: t.TempDir(), logs: &logBuffer{}}
	h.srv = awstest.New(t, awstest.WithClock(h.clk))
	h.srv.Env(t)
	h.open(o)
	return h
}

func (h *harness) open(o cloudwatch.Options) {
	h.t.Helper()
	o.SpoolDir = h.dir
	o.Clock = h.clk
	o.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.Rand == nil {
		o.Rand = func() float64 { return 0.5 }
	}
	p, err := cloudwatch.New(o)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.t.Cleanup(func() { p.Close() })
	h.pub = p
}

// run advances the clock by d in steps of one second, observing the
// sessions and stepping the publisher each second, as the agent's loop
// and Run would.
func (h *harness) run(d time.Duration) {
	h.t.Helper()
	for end := h.clk.Now().Add(d); h.clk.Now().Before(end); {
		h.clk.Advance(time.Second)
		h.pub.Observe(h.clk.Now(), h.sessions)
		h.pub.Step(h.t.Context())
	}
}

func (h *harness) puts() []awstest.Request {
	return h.srv.Calls(awstest.CloudWatchService, "PutMetricData")
}

type dp struct {
	At    time.Time
	Value float64
}

func (h *harness) delivered() []dp {
	var out []dp
	for _, d := range h.srv.Datapoints() {
		out = append(out, dp{d.Time.UTC(), *d.Value})
	}
	return out
}

func minutes(values ...float64) []dp {
	var out []dp
	for i, v := range values {
		out = append(out, dp{t0.Add(time.Duration(i) * time.Minute), v})
	}
	return out
}

func checkDelivered(t *testing.T, got, want []dp) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("delivered %d datapoints, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range want {
		if !got[i].At.Equal(want[i].At) || got[i].Value != want[i].Value {
			t.Fatalf("datapoint %d = %v, want %v\n got %v\nwant %v", i, got[i], want[i], got, want)
		}
	}
}

func TestOneDatapointPerPeriod(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.pub.Observe(t0, 0)
	h.run(90 * time.Second) // 12:01:30
	// A session of 100 ms: one observation sees it.
	h.clk.Advance(100 * time.Millisecond)
	h.pub.Observe(h.clk.Now(), 1)
	h.pub.Observe(h.clk.Now().Add(100*time.Millisecond), 0)
	h.run(90 * time.Second) // 12:03:00.1
	h.sessions = 2
	h.run(2 * time.Minute)
	h.sessions = 0
	h.run(2 * time.Minute)

	// 12:05 is 2: the observation at 12:05:00.1 still saw both sessions.
	checkDelivered(t, h.delivered(), minutes(0, 1, 0, 2, 2, 2, 0))
	puts := h.puts()
	if len(puts) != 7 {
		t.Fatalf("%d PutMetricData calls, want one per period", len(puts))
	}
	for i, r := range puts {
		if r.Auth == nil || !r.Auth.Verified || r.Auth.Service != "monitoring" || r.Auth.Region != h.srv.Region {
			t.Errorf("call %d not SigV4-signed for monitoring in %s: %+v", i, h.srv.Region, r.Auth)
		}
		// Sent within the second after its period ends.
		end := t0.Add(time.Duration(i+1) * time.Minute)
		if r.Time.Before(end) || r.Time.After(end.Add(time.Second)) {
			t.Errorf("datapoint %d sent at %v, want just after %v", i, r.Time, end)
		}
	}
	for _, d := range h.srv.Datapoints() {
		if d.Namespace != "EC2" || d.MetricName != "SSH Connections" || len(d.Dimensions) != 1 ||
			d.Dimension("InstanceId") != h.srv.InstanceID || d.Unit != "Count" || d.StorageResolution != nil {
			t.Errorf("datum %+v, want EC2/SSH Connections InstanceId=%s Count", d, h.srv.InstanceID)
		}
	}
	st := h.pub.Stats()
	if st.Delivered != 7 || st.Calls != 7 || st.Errors != 0 || st.Pending != 0 || st.InstanceID != h.srv.InstanceID || !st.LastSuccess.Equal(t0.Add(7*time.Minute+100*time.Millisecond)) {
		t.Errorf("stats %+v", st)
	}
	if st.SpoolBytes != 0 {
		t.Errorf("spool holds %d bytes after delivery, want 0", st.SpoolBytes)
	}
}

func TestConfiguredMetric(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{
		Namespace: "Dev/Boxes", MetricName: "Sessions", InstanceID: "i-0feedfeedfeedfeed", Region: awstest.DefaultRegion,
		Dimensions: map[string]string{"Team": "infra", "Env": "dev"}, Period: 10 * time.Second,
	})
	h.sessions = 3
	h.pub.Observe(t0, 3)
	h.run(30 * time.Second)
	ds := h.srv.Datapoints()
	if len(ds) != 3 {
		t.Fatalf("%d datapoints in 30s of 10s periods", len(ds))
	}
	d := ds[0]
	got := fmt.Sprint(d.Dimensions)
	if d.Namespace != "Dev/Boxes" || d.MetricName != "Sessions" || got != "[{InstanceId i-0feedfeedfeedfeed} {Env dev} {Team infra}]" ||
		d.StorageResolution == nil || *d.StorageResolution != 1 || !d.Time.Equal(t0) {
		t.Errorf("datum %+v dims %s, want high resolution with the configured names", d, got)
	}
	// The instance id and region were given: IMDS was never asked.
	for _, r := range h.srv.Requests() {
		if r.Protocol == awstest.ProtocolIMDS {
			t.Errorf("IMDS asked: %s", r.Action)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, o := range []cloudwatch.Options{
		{},
		{SpoolDir: "x", Period: 7 * time.Second},
		{SpoolDir: "x", Period: 90 * time.Second},
		{SpoolDir: "x", BatchInterval: 90 * time.Second},
		{SpoolDir: "x", BatchInterval: 2 * time.Hour},
		{SpoolDir: "x", MaxBatch: 1001},
		{SpoolDir: "x", Namespace: "AWS/EC2"},
		{SpoolDir: "x", Dimensions: map[string]string{"a": ""}},
	} {
		if _, err := cloudwatch.New(o); !errors.Is(err, cloudwatch.ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
}

// TestOutage: CloudWatch unreachable for ten periods, then back. Every
// datapoint arrives, in order, with its own timestamp, none twice; the
// backlog goes out in one call at the first retry after the outage.
func TestOutage(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start func(*awstest.Server)
		stop  func(*awstest.Server)
	}{
		{"network", func(s *awstest.Server) { s.SetCloudWatchOutage(true) }, func(s *awstest.Server) { s.SetCloudWatchOutage(false) }},
		{"503", func(s *awstest.Server) { s.SetCloudWatchFailure(awstest.CodeServiceUnavailable, 0, -1) }, func(s *awstest.Server) { s.SetCloudWatchFailure("", 0, 0) }},
		{"throttling", func(s *awstest.Server) { s.SetCloudWatchFailure(awstest.CodeThrottling, 0, -1) }, func(s *awstest.Server) { s.SetCloudWatchFailure("", 0, 0) }},
		{"access denied", func(s *awstest.Server) { s.SetCloudWatchFailure(awstest.CodeAccessDenied, 0, -1) }, func(s *awstest.Server) { s.SetCloudWatchFailure("", 0, 0) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cloudwatch.Options{})
			h.pub.Observe(t0, 0)
			h.run(2*time.Minute + 10*time.Second) // 12:02:10, two delivered
			tt.start(h.srv)
			h.sessions = 1
			h.run(5 * time.Minute)
			h.sessions = 0
			h.run(5*time.Minute - 10*time.Second) // 12:12:00
			during := h.pub.Stats()
			if during.Pending != 10 || during.ConsecutiveFailures == 0 || during.LastError == "" {
				t.Errorf("stats during the outage: %+v", during)
			}
			if !during.OldestPending.Equal(t0.Add(2 * time.Minute)) {
				t.Errorf("oldest pending %v", during.OldestPending)
			}
			tt.stop(h.srv)
			back := h.clk.Now()
			var at time.Time
			for i := 0; i < 600 && at.IsZero(); i++ {
				h.run(time.Second)
				if len(h.delivered()) == 12 {
					at = h.clk.Now()
				}
			}
			h.run(2 * time.Minute)

			want := minutes(0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0)
			checkDelivered(t, h.delivered(), want)
			seen := map[time.Time]int{}
			for _, d := range h.srv.Datapoints() {
				if prev, dup := seen[d.Time]; dup {
					t.Errorf("%v delivered twice (calls %d and %d)", d.Time, prev, d.Call)
				}
				seen[d.Time] = d.Call
			}
			t.Logf("%s: back at %v, backlog of 10 delivered at %v (%v later); %d calls failed during the outage",
				tt.name, back.Format("15:04:05"), at.Format("15:04:05"), at.Sub(back), during.Errors)
			if at.Sub(back) > time.Minute+time.Second {
				t.Errorf("backlog delivered %v after the outage, want within one period", at.Sub(back))
			}
			if st := h.pub.Stats(); st.Pending != 0 || st.ConsecutiveFailures != 0 || st.DroppedRejected != 0 {
				t.Errorf("stats after: %+v", st)
			}
		})
	}
}

// TestBackoff checks the retry schedule on the fake clock: jittered
// exponential from MinBackoff, capped at MaxBackoff, reset after success.
func TestBackoff(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{Rand: func() float64 { return 0 }, BatchInterval: time.Hour, Period: time.Hour})
	h.srv.SetCloudWatchOutage(true)
	h.pub.Record(t0, 1)
	var gaps []time.Duration
	last := h.clk.Now()
	h.pub.Step(t.Context())
	for range 12 {
		next := h.pub.Step(t.Context())
		h.clk.Set(next)
		h.pub.Step(t.Context())
		gaps = append(gaps, h.clk.Now().Sub(last))
		last = h.clk.Now()
	}
	// Rand 0 takes the low end of [d/2, d).
	want := "[500ms 1s 2s 4s 8s 16s 32s 1m4s 2m8s 2m30s 2m30s 2m30s]"
	if got := fmt.Sprint(gaps); got != want {
		t.Errorf("retry gaps %s, want %s", got, want)
	}
	if n := len(h.srv.Calls(awstest.CloudWatchService, "PutMetricData")); n != 13 {
		t.Errorf("%d attempts, want 13", n)
	}
	h.srv.SetCloudWatchOutage(false)
	h.clk.Set(h.pub.Step(t.Context()))
	h.pub.Step(t.Context())
	if st := h.pub.Stats(); st.Pending != 0 || st.ConsecutiveFailures != 0 || !st.NextRetry.IsZero() {
		t.Errorf("after recovery: %+v", st)
	}
	// A new failure starts again from MinBackoff.
	h.srv.SetCloudWatchOutage(true)
	h.pub.Record(t0.Add(time.Hour), 0)
	h.pub.Step(t.Context())
	if st := h.pub.Stats(); st.NextRetry.Sub(h.clk.Now()) != 500*time.Millisecond {
		t.Errorf("first retry after a new failure in %v", st.NextRetry.Sub(h.clk.Now()))
	}
}

func TestRestartWithBacklog(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.srv.SetCloudWatchOutage(true)
	h.sessions = 2
	h.pub.Observe(t0, 2)
	h.run(5*time.Minute + 30*time.Second)
	if st := h.pub.Stats(); st.Pending != 5 || st.SpoolBytes == 0 {
		t.Fatalf("before the restart: %+v", st)
	}
	// The process dies; a new one opens the same spool.
	h.pub.Close()
	h.srv.SetCloudWatchOutage(false)
	h.open(cloudwatch.Options{})
	if st := h.pub.Stats(); st.Pending != 5 {
		t.Fatalf("after the restart: %d pending, want 5", st.Pending)
	}
	if !strings.Contains(h.logs.String(), "datapoints from an earlier run") {
		t.Errorf("no log about the backlog:\n%s", h.logs)
	}
	failed := len(h.puts())
	h.pub.Step(t.Context())
	checkDelivered(t, h.delivered(), minutes(2, 2, 2, 2, 2))
	if n := len(h.puts()) - failed; n != 1 {
		t.Errorf("backlog sent in %d calls, want 1", n)
	}
	// The new run keeps publishing after it. The minute of the crash
	// starts over: what the dead process saw of it is lost.
	h.sessions = 0
	h.run(time.Minute + 30*time.Second)
	checkDelivered(t, h.delivered(), minutes(2, 2, 2, 2, 2, 0, 0))
}

func TestSpoolLocked(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	if _, err := cloudwatch.New(cloudwatch.Options{SpoolDir: h.dir}); !errors.Is(err, cloudwatch.ErrSpoolLocked) {
		t.Fatalf("second publisher on the spool: %v, want ErrSpoolLocked", err)
	}
}

// TestCrashDuringAppend leaves a torn last line, as a crash in the
// middle of an append would: the complete lines before it survive.
func TestCrashDuringAppend(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.srv.SetCloudWatchOutage(true)
	h.pub.Record(t0, 1)
	h.pub.Record(t0.Add(time.Minute), 0)
	h.pub.Close()
	path := filepath.Join(h.dir, cloudwatch.SpoolFile)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("1772366520 3 ab")
	f.Close()
	h.srv.SetCloudWatchOutage(false)
	h.open(cloudwatch.Options{})
	h.pub.Step(t.Context())
	checkDelivered(t, h.delivered(), minutes(1, 0))
	if !strings.Contains(h.logs.String(), "partial last line") {
		t.Errorf("torn line not reported:\n%s", h.logs)
	}
}

func TestTooOldDropped(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.srv.SetCloudWatchOutage(true)
	h.sessions = 1
	h.pub.Observe(t0, 1)
	h.run(3*time.Minute + 10*time.Second) // 12:00, 12:01, 12:02 pending, 12:03 open
	// Two weeks later, one minute's datapoint is still acceptable.
	h.clk.Set(t0.Add(cloudwatch.MaxAge - cloudwatch.AgeMargin + 90*time.Second))
	h.srv.SetCloudWatchOutage(false)
	h.pub.Step(t.Context())
	st := h.pub.Stats()
	if st.DroppedTooOld != 2 || st.Pending != 0 {
		t.Errorf("stats %+v, want 2 dropped as too old", st)
	}
	checkDelivered(t, h.delivered(), []dp{{t0.Add(2 * time.Minute), 1}, {t0.Add(3 * time.Minute), 1}})
	if !strings.Contains(h.logs.String(), "dropped datapoints older than CloudWatch accepts") || !strings.Contains(h.logs.String(), "count=2") {
		t.Errorf("drop not logged with its count:\n%s", h.logs)
	}
}

// TestRejectedDatapointDropped: CloudWatch refuses a request because of
// one datapoint (a timestamp more than two hours ahead); the others are
// delivered and only that one is dropped, counted and logged.
func TestRejectedDatapointDropped(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{BatchInterval: 5 * time.Minute})
	h.srv.SetCloudWatchOutage(true)
	for i := range 4 {
		h.pub.Record(t0.Add(time.Duration(i)*time.Minute), 0)
	}
	h.pub.Record(t0.Add(3*time.Hour), 0) // a clock that jumped
	h.pub.Record(t0.Add(5*time.Minute), 0)
	h.pub.Step(t.Context())
	h.srv.SetCloudWatchOutage(false)
	h.clk.Set(h.pub.Step(t.Context()))
	h.pub.Step(t.Context())
	want := minutes(0, 0, 0, 0)
	want = append(want, dp{t0.Add(5 * time.Minute), 0})
	checkDelivered(t, h.delivered(), want)
	st := h.pub.Stats()
	if st.DroppedRejected != 1 || st.Pending != 0 || st.Delivered != 5 {
		t.Errorf("stats %+v, want 1 rejected", st)
	}
	if !strings.Contains(h.logs.String(), "CloudWatch refused a datapoint") {
		t.Errorf("rejection not logged:\n%s", h.logs)
	}
}

func TestInvalidRecord(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.pub.Record(t0, -1)
	if st := h.pub.Stats(); st.DroppedInvalid != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestBatching: with a five-minute batch, five idle datapoints go in one
// call; when a session appears its datapoint goes at once, with the idle
// ones before it.
func TestBatching(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{BatchInterval: 5 * time.Minute})
	h.pub.Observe(t0, 0)
	h.run(10*time.Minute + 5*time.Second)
	if n := len(h.puts()); n != 2 {
		t.Fatalf("%d calls in 10 idle minutes, want 2", n)
	}
	for i, r := range h.puts() {
		// The fifth datapoint completes the batch: 12:04 closes at 12:05:00.
		if want := t0.Add(time.Duration(5*(i+1)) * time.Minute); !r.Time.Equal(want) {
			t.Errorf("batch %d sent at %v, want %v", i, r.Time, want)
		}
	}
	h.run(2 * time.Minute) // 12:12:05, 12:10 and 12:11 pending
	h.sessions = 1
	h.run(time.Minute) // 12:13:05: 12:12 closed with 1
	if n := len(h.puts()); n != 3 {
		t.Fatalf("%d calls, want the session's datapoint sent at once", n)
	}
	checkDelivered(t, h.delivered(), minutes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1))
	for _, d := range h.srv.Datapoints()[10:] {
		if d.Call != 3 {
			t.Errorf("datapoint %v in call %d, want 3", d.Time, d.Call)
		}
	}
	// While in use, batching goes on.
	h.run(4 * time.Minute)
	if n := len(h.puts()); n != 3 {
		t.Errorf("%d calls, want the in-use datapoints batched", n)
	}
}

func TestMaxBatch(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{MaxBatch: 1000})
	h.srv.SetCloudWatchOutage(true)
	for i := range 2500 {
		h.pub.Record(t0.Add(time.Duration(i)*time.Minute), float64(i%2))
	}
	h.clk.Set(t0.Add(2500 * time.Minute))
	h.pub.Step(t.Context())
	h.srv.SetCloudWatchOutage(false)
	h.clk.Set(h.pub.Step(t.Context()))
	h.pub.Step(t.Context())
	var sizes []int
	for _, r := range h.puts() {
		if r.ErrorCode == "" {
			var in struct{ MetricData []any }
			if err := r.DecodeCBOR(&in); err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(in.MetricData))
		}
	}
	if fmt.Sprint(sizes) != "[1000 1000 500]" {
		t.Errorf("batches %v, want [1000 1000 500]", sizes)
	}
	ds := h.delivered()
	if len(ds) != 2500 || !ds[0].At.Equal(t0) || !ds[2499].At.Equal(t0.Add(2499*time.Minute)) {
		t.Errorf("delivered %d", len(ds))
	}
}

// TestSamePeriodTwice: after a restart within a period the same period is
// recorded twice; one request never carries it twice.
func TestSamePeriodTwice(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	h.srv.SetCloudWatchOutage(true)
	h.pub.Record(t0, 1)
	h.pub.Record(t0, 3)
	h.pub.Record(t0.Add(time.Minute), 0)
	h.pub.Step(t.Context())
	h.srv.SetCloudWatchOutage(false)
	h.clk.Set(h.pub.Step(t.Context()))
	h.pub.Step(t.Context())
	checkDelivered(t, h.delivered(), minutes(3, 0))
}

// TestCallsPerDay counts PutMetricData calls over a day of one-minute
// periods: 1440 like the cron recipe, 288 with a five-minute batch.
func TestCallsPerDay(t *testing.T) {
	for _, tt := range []struct {
		batch time.Duration
		want  int
	}{{0, 1440}, {5 * time.Minute, 288}} {
		h := newHarness(t, cloudwatch.Options{BatchInterval: tt.batch})
		h.pub.Observe(t0, 0)
		for end := t0.Add(24 * time.Hour); h.clk.Now().Before(end); {
			h.clk.Advance(10 * time.Second)
			h.pub.Observe(h.clk.Now(), 0)
			h.pub.Step(t.Context())
		}
		h.clk.Advance(2 * time.Second)
		h.pub.Step(t.Context())
		if n := len(h.puts()); n != tt.want {
			t.Errorf("batch %v: %d calls a day, want %d", tt.batch, n, tt.want)
		}
		if n := len(h.srv.Datapoints()); n != 1440 {
			t.Errorf("batch %v: %d datapoints a day, want 1440", tt.batch, n)
		}
		t.Logf("batch %v: %d PutMetricData calls, %d datapoints per instance-day", tt.batch, len(h.puts()), len(h.srv.Datapoints()))
	}
}

// TestRunLoop drives the real Run on the fake clock: the timer closes the
// period when no observation comes, and cancelling Run records the period
// in progress and delivers it.
func TestRunLoop(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- h.pub.Run(ctx) }()
	h.pub.Observe(t0.Add(10*time.Second), 2)
	h.pub.Observe(t0.Add(50*time.Second), 0)
	// The agent goes quiet; Run's own timer closes the minute.
	testproc.WaitFor(t, "Run to arm its timer", 10*time.Second, func() bool {
		d, ok := h.clk.NextDeadline()
		return ok && d.Equal(t0.Add(time.Minute+cloudwatch.DefaultCloseGrace))
	})
	h.clk.Set(t0.Add(time.Minute + cloudwatch.DefaultCloseGrace))
	// Wait until the call has returned too: cancelling while its answer
	// is in flight would (rightly, at least once) send it again.
	testproc.WaitFor(t, "the first datapoint", 10*time.Second, func() bool { return len(h.delivered()) == 1 && h.pub.Stats().Pending == 0 })
	h.pub.Observe(t0.Add(70*time.Second), 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkDelivered(t, h.delivered(), minutes(2, 1))
}

// TestOutageRealTime runs Run on the real clock with one-second periods
// and measures how long after a three-second outage the backlog arrives.
func TestOutageRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	srv := awstest.New(t)
	srv.Env(t)
	p, err := cloudwatch.New(cloudwatch.Options{SpoolDir: t.TempDir(), Period: time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second,
		CloseGrace: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				p.Observe(now, 1)
			}
		}
	})
	time.Sleep(1500 * time.Millisecond)
	srv.SetCloudWatchOutage(true)
	time.Sleep(3 * time.Second)
	before := p.Stats()
	srv.SetCloudWatchOutage(false)
	back := time.Now()
	testproc.WaitFor(t, "the backlog", 10*time.Second, func() bool { return p.Stats().Delivered >= before.Delivered+uint64(before.Pending) })
	delay := time.Since(back)
	close(stop)
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("real time: %d datapoints pending after a 3s outage (%d failed calls), all delivered %v after it ended",
		before.Pending, before.Errors, delay.Round(time.Millisecond))
	if before.Pending < 2 || delay > 3*time.Second {
		t.Errorf("pending %d, delay %v", before.Pending, delay)
	}
	seen := map[time.Time]bool{}
	var prev time.Time
	for _, d := range srv.Datapoints() {
		if seen[d.Time] {
			t.Errorf("%v delivered twice", d.Time)
		}
		if d.Time.Before(prev) {
			t.Errorf("%v after %v", d.Time, prev)
		}
		seen[d.Time], prev = true, d.Time
	}
}

// putAlarm creates the idle alarm through the SDK.
func putAlarm(t *testing.T, srv *awstest.Server, a cloudwatch.IdleAlarm) {
	t.Helper()
	in, err := a.Input()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cwapi.NewFromConfig(cfg).PutMetricAlarm(t.Context(), in); err != nil {
		t.Fatalf("PutMetricAlarm: %v", err)
	}
}

func TestResetAlarmIfStuck(t *testing.T) {
	h := newHarness(t, cloudwatch.Options{})
	name := cloudwatch.DefaultAlarmName(h.srv.InstanceID)
	idle := cloudwatch.IdleAlarm{InstanceID: h.srv.InstanceID, Region: h.srv.Region}

	if _, err := h.pub.ResetAlarmIfStuck(t.Context(), ""); !errors.Is(err, cloudwatch.ErrAlarmNotFound) {
		t.Fatalf("no alarm: %v, want ErrAlarmNotFound", err)
	}
	putAlarm(t, h.srv, idle)
	if reset, err := h.pub.ResetAlarmIfStuck(t.Context(), ""); reset || err != nil {
		t.Fatalf("alarm in INSUFFICIENT_DATA: %v, %v; want left alone", reset, err)
	}

	// The alarm stopped the instance; someone started it again.
	h.clk.Advance(time.Hour)
	h.srv.SetAlarmState(name, awstest.StateAlarm, "Threshold Crossed: 15 out of the last 15 datapoints were less than or equal to the threshold (0.0).")
	h.clk.Advance(3 * time.Hour)
	reset, err := h.pub.ResetAlarmIfStuck(t.Context(), "")
	if err != nil || !reset {
		t.Fatalf("stuck alarm: %v, %v; want reset", reset, err)
	}
	a, _ := h.srv.Alarm(name)
	if a.StateValue != awstest.StateOK || !strings.Contains(a.StateReason, "connwatch started on "+h.srv.InstanceID) ||
		!strings.Contains(a.StateReasonData, `"previousState":"ALARM"`) {
		t.Errorf("alarm after reset: %s %q %s", a.StateValue, a.StateReason, a.StateReasonData)
	}
	last := a.History[len(a.History)-1]
	if last.From != "ALARM" || last.To != "OK" || len(last.Actions) != 0 || !last.Time.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("last change %+v, want ALARM -> OK running no action", last)
	}
	if reset, err := h.pub.ResetAlarmIfStuck(t.Context(), name); reset || err != nil {
		t.Errorf("second call: %v, %v", reset, err)
	}

	// An alarm that treats missing data as breaching is left in ALARM.
	idle.TreatMissingData = cloudwatch.TreatBreaching
	putAlarm(t, h.srv, idle)
	h.srv.SetAlarmState(name, awstest.StateAlarm, "Threshold Crossed")
	if reset, err := h.pub.ResetAlarmIfStuck(t.Context(), ""); reset || err != nil {
		t.Errorf("breaching alarm: %v, %v; want left alone", reset, err)
	}
	if a, _ := h.srv.Alarm(name); a.StateValue != awstest.StateAlarm {
		t.Errorf("breaching alarm now %s", a.StateValue)
	}

	// Someone else's alarm is not connwatch's to reset.
	putAlarm(t, h.srv, cloudwatch.IdleAlarm{Name: "other", InstanceID: "i-0000000000000000f", Region: h.srv.Region})
	h.srv.SetAlarmState("other", awstest.StateAlarm, "x")
	if _, err := h.pub.ResetAlarmIfStuck(t.Context(), "other"); !errors.Is(err, cloudwatch.ErrAlarmMismatch) {
		t.Errorf("other instance's alarm: %v, want ErrAlarmMismatch", err)
	}
}

func TestIdleAlarmInput(t *testing.T) {
	in, err := cloudwatch.IdleAlarm{InstanceID: "i-0abc", Region: "cn-north-1", Action: "terminate"}.Input()
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(in.AlarmName) != "connwatch-idle-i-0abc" || in.AlarmActions[0] != "arn:aws-cn:automate:cn-north-1:ec2:terminate" ||
		*in.EvaluationPeriods != 15 || *in.DatapointsToAlarm != 15 || *in.Period != 60 || *in.Threshold != 0 ||
		in.ComparisonOperator != "LessThanOrEqualToThreshold" || in.Statistic != "Maximum" || aws.ToString(in.TreatMissingData) != "missing" {
		t.Errorf("input %+v", in)
	}
	for _, a := range []cloudwatch.IdleAlarm{
		{InstanceID: "i-1", Region: "eu-west-1", Action: "hibernate"},
		{InstanceID: "i-1", Region: "eu-west-1", DatapointsToAlarm: 16},
		{InstanceID: "i-1", Region: "eu-west-1", Period: 45 * time.Second},
		{InstanceID: "i-1", Region: "eu-west-1", EvaluationPeriods: 1441},
		{InstanceID: "i-1", Region: "eu-west-1", TreatMissingData: "zero"},
		{InstanceID: "x", Region: "eu-west-1"},
	} {
		if _, err := a.Input(); err == nil {
			t.Errorf("%+v accepted", a)
		}
	}
	if _, err := (cloudwatch.IdleAlarm{InstanceID: "i-1", Region: "eu-west-1", Action: "hibernate"}).Input(); !errors.Is(err, cloudwatch.ErrHibernateAction) {
		t.Errorf("hibernate: %v", err)
	}
}
