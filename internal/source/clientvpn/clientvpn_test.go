package clientvpn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

const (
	epA = "cvpn-endpoint-0a1b2c3d4e5f60718"
	epB = "cvpn-endpoint-0fedcba9876543210"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is a loopback AWS with Client VPN endpoints, a fake clock shared by
// server and source, and an EC2 client built as production builds one.
type env struct {
	tb     testing.TB
	srv    *awstest.Server
	clock  *clock.Fake
	client *ec2.Client
}

func newEnv(tb testing.TB, endpoints ...string) *env {
	tb.Helper()
	fc := clock.NewFake(t0)
	srv := awstest.New(tb, awstest.WithClock(fc))
	srv.Env(tb)
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		tb.Fatalf("load AWS config: %v", err)
	}
	hc := &http.Client{Transport: bodyCopier{http.DefaultTransport.(*http.Transport).Clone()}}
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		o.Retryer = testRetryer()
		o.HTTPClient = hc
	})
	for _, ep := range endpoints {
		srv.AddClientVPNEndpoint(ep)
	}
	return &env{tb: tb, srv: srv, clock: fc, client: client}
}

// testRetryer is the SDK's standard retryer (three attempts, the same
// retryable errors) without the backoff sleeps and the retry quota, so
// that throttling tests take no real time.
func testRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		o.RateLimiter = ratelimit.None
	})
}

// bodyCopier gives net/http its own copy of each request body. It works
// around an SDK race that loopback makes frequent: smithy-go closes a
// request's body as soon as the response headers arrive, and its body
// wrapper then answers net/http's final read of the body with io.EOF from
// WriteTo, so the transport's write loop closes the connection while a
// large response is still being read: "use of closed network connection"
// (aws-sdk-go-v2 issues 1825 and 2737; the standard retryer retries it
// since PR 2949). On loopback with 25 KB replies it hit about one request
// in a hundred, and three in a row under the benchmark; over a real
// network the reply comes too late for it.
type bodyCopier struct{ next http.RoundTripper }

func (b bodyCopier) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return b.next.RoundTrip(r)
	}
	data, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	r.ContentLength = int64(len(data))
	return b.next.RoundTrip(r)
}

func (e *env) source(cfg Config) *Source {
	e.tb.Helper()
	cfg.Clock = e.clock
	s, err := New(e.client, cfg)
	if err != nil {
		e.tb.Fatalf("New: %v", err)
	}
	return s
}

func (e *env) poll(s *Source) session.Snapshot {
	e.tb.Helper()
	snap, err := s.Poll(context.Background())
	if err != nil {
		e.tb.Fatalf("Poll: %v", err)
	}
	if !snap.Time.Equal(e.clock.Now()) {
		e.tb.Fatalf("snapshot time %v, want the clock's %v", snap.Time, e.clock.Now())
	}
	return snap
}

func ids(ss []session.Session) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // in the error
	}{
		{"no endpoints", Config{}, "endpoints: at least one"},
		{"not an id", Config{Endpoints: []string{epA, "vpn-0123"}}, `endpoints[1]: "vpn-0123"`},
		{"upper case", Config{Endpoints: []string{"cvpn-endpoint-0ABC"}}, `endpoints[0]: "cvpn-endpoint-0ABC"`},
		{"no hex", Config{Endpoints: []string{"cvpn-endpoint-"}}, `endpoints[0]`},
		{"repeated", Config{Endpoints: []string{epA, epB, epA}}, `endpoints[2]: "` + epA + `" repeats endpoints[0]`},
		{"page too small", Config{Endpoints: []string{epA}, PageSize: 4}, "page size: 4"},
		{"page too large", Config{Endpoints: []string{epA}, PageSize: 1001}, "page size: 1001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(&ec2.Client{}, tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want ErrInvalidConfig naming %q", err, tt.want)
			}
		})
	}
	if _, err := New(nil, Config{Endpoints: []string{epA}}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without a client = %v", err)
	}
	s, err := New(&ec2.Client{}, Config{Endpoints: []string{epA, epB}})
	if err != nil || s.pageSize != DefaultPageSize || s.Name() != "aws-client-vpn" || s.Kind() != session.KindAWSClientVPN {
		t.Errorf("New = %+v, %v", s, err)
	}
}

func TestPagination(t *testing.T) {
	e := newEnv(t, epA)
	var want []string
	for range 12 {
		want = append(want, e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "c"}))
		e.clock.Advance(time.Second)
	}
	s := e.source(Config{Endpoints: []string{epA}, PageSize: 5})
	snap := e.poll(s)
	if diff := cmp.Diff(want, ids(snap.Sessions)); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	calls := e.srv.Calls("ec2", "DescribeClientVpnConnections")
	if len(calls) != 3 {
		t.Fatalf("%d requests, want 3 pages of at most 5", len(calls))
	}
	for i, c := range calls {
		if c.Params.Get("ClientVpnEndpointId") != epA || c.Params.Get("MaxResults") != "5" ||
			(i == 0) != (c.Params.Get("NextToken") == "") || c.Status != 200 {
			t.Errorf("request %d: %v, status %d", i, c.Params, c.Status)
		}
	}
	if !snap.Complete || len(snap.Warnings) != 0 {
		t.Errorf("warnings %v", snap.Warnings)
	}
}

// TestLifecycle: two endpoints; connect -> live with every field; end ->
// Ended once with its end time.
func TestLifecycle(t *testing.T) {
	e := newEnv(t, epA, epB)
	s := e.source(Config{Endpoints: []string{epA, epB}})
	if snap := e.poll(s); len(snap.Sessions) != 0 || len(snap.Ended) != 0 || !snap.Complete {
		t.Fatalf("empty endpoints: %+v", snap)
	}

	e.clock.Advance(15 * time.Second)
	a := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{ClientIP: "172.31.0.9", CommonName: "alice.example",
		Username: "alice", IngressBytes: 100, EgressBytes: 200})
	started := e.clock.Now()
	e.clock.Advance(5 * time.Second)
	b := e.srv.ConnectClientVPN(epB, awstest.ClientVPNConnection{ClientIPv6: "2001:db8::9", CommonName: "bob.example"})
	e.clock.Advance(40 * time.Second)
	snap := e.poll(s)
	wantA := session.Session{
		ID: a, Kind: session.KindAWSClientVPN, User: "alice", StartedAt: started, LastActivityAt: &started,
		VPN: &session.VPN{Server: epA, CommonName: "alice.example", Username: "alice", VirtualAddr: "172.31.0.9",
			ConnectionID: a, BytesIn: 100, BytesOut: 200, Status: "active"},
	}
	if diff := cmp.Diff([]string{a, b}, ids(snap.Sessions)); diff != "" {
		t.Fatalf("sessions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantA, snap.Sessions[0]); diff != "" {
		t.Errorf("session on %s (-want +got):\n%s", epA, diff)
	}
	if got := snap.Sessions[1]; got.User != "bob.example" || got.VPN.VirtualAddr != "2001:db8::9" || got.VPN.Server != epB || got.RemoteAddr != "" {
		t.Errorf("session on %s: user %q, vpn %+v", epB, got.User, got.VPN)
	}

	e.clock.Advance(20 * time.Second)
	e.srv.AddClientVPNTraffic(epA, a, 0, 50)
	e.srv.DisconnectClientVPN(epA, a)
	ended := e.clock.Now()
	e.clock.Advance(40 * time.Second)
	snap = e.poll(s)
	if diff := cmp.Diff([]string{b}, ids(snap.Sessions)); diff != "" {
		t.Errorf("sessions after the end (-want +got):\n%s", diff)
	}
	wantEnd := wantA
	wantEnd.EndedAt = &ended
	wantEnd.VPN = &session.VPN{Server: epA, CommonName: "alice.example", Username: "alice", VirtualAddr: "172.31.0.9",
		ConnectionID: a, BytesIn: 100, BytesOut: 250, Status: "terminated"}
	if diff := cmp.Diff([]session.Session{wantEnd}, snap.Ended); diff != "" {
		t.Errorf("ended (-want +got):\n%s", diff)
	}
	// Listed as terminated for the next hour, reported once.
	for range 5 {
		e.clock.Advance(time.Minute)
		if snap := e.poll(s); len(snap.Ended) != 0 || !cmp.Equal(ids(snap.Sessions), []string{b}) {
			t.Fatalf("later poll: sessions %v, ended %v", ids(snap.Sessions), ids(snap.Ended))
		}
	}
}

// TestBetweenPolls: a connection that begins and ends between two polls
// is reported once, in Ended, with both its times.
func TestBetweenPolls(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	e.poll(s)
	e.clock.Advance(10 * time.Second)
	id := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "quick", IngressBytes: 10})
	start := e.clock.Now()
	e.clock.Advance(30 * time.Second)
	e.srv.DisconnectClientVPN(epA, id)
	end := e.clock.Now()
	e.clock.Advance(20 * time.Second)

	snap := e.poll(s)
	if len(snap.Sessions) != 0 || len(snap.Ended) != 1 {
		t.Fatalf("sessions %v, ended %v; want one ended", ids(snap.Sessions), ids(snap.Ended))
	}
	got := snap.Ended[0]
	if got.ID != id || !got.StartedAt.Equal(start) || got.EndedAt == nil || !got.EndedAt.Equal(end) ||
		got.User != "quick" || got.VPN.Status != "terminated" || got.VPN.BytesIn != 10 {
		t.Errorf("ended = %+v (vpn %+v), want %s from %v to %v", got, got.VPN, id, start, end)
	}
	e.clock.Advance(time.Minute)
	if snap := e.poll(s); len(snap.Ended) != 0 {
		t.Errorf("reported again: %v", ids(snap.Ended))
	}
}

// TestFirstPollHistory: what ended before the Source existed is not
// reported; what ended at or after its creation is.
func TestFirstPollHistory(t *testing.T) {
	e := newEnv(t, epA)
	old := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "old"})
	live := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "live"})
	e.clock.Advance(10 * time.Minute)
	e.srv.DisconnectClientVPN(epA, old)
	e.clock.Advance(30 * time.Minute)
	recent := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "recent"})
	e.clock.Advance(500 * time.Millisecond) // created within the second it ends in
	s := e.source(Config{Endpoints: []string{epA}})
	e.srv.DisconnectClientVPN(epA, recent)
	e.clock.Advance(time.Minute)

	snap := e.poll(s)
	if !cmp.Equal(ids(snap.Sessions), []string{live}) || !cmp.Equal(ids(snap.Ended), []string{recent}) {
		t.Errorf("sessions %v, ended %v; want [%s] and [%s]", ids(snap.Sessions), ids(snap.Ended), live, recent)
	}
	// A connection up since before the Source: idle at most since then.
	if la := snap.Sessions[0].LastActivityAt; la == nil || !la.Equal(s.created) || !snap.Sessions[0].StartedAt.Equal(t0) {
		t.Errorf("pre-existing session: started %v, last activity %v, want %v and %v", snap.Sessions[0].StartedAt, la, t0, s.created)
	}
	e.clock.Advance(time.Minute)
	if snap := e.poll(s); len(snap.Ended) != 0 {
		t.Errorf("second poll ended %v", ids(snap.Ended))
	}
}

// TestEndpointFailing: one endpoint failing gives a blind warning naming
// it and the AWS error; its sessions are kept, none ends, and the next
// good poll reports what happened meanwhile.
func TestEndpointFailing(t *testing.T) {
	for _, code := range []string{awstest.CodeUnauthorizedOperation, awstest.CodeRequestLimitExceeded} {
		t.Run(code, func(t *testing.T) {
			e := newEnv(t, epA, epB)
			a := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "a"})
			b := e.srv.ConnectClientVPN(epB, awstest.ClientVPNConnection{CommonName: "b"})
			s := e.source(Config{Endpoints: []string{epA, epB}})
			e.clock.Advance(time.Minute)
			before := e.poll(s)

			e.srv.SetClientVPNFailure(epA, code, "no")
			e.clock.Advance(10 * time.Second)
			e.srv.DisconnectClientVPN(epA, a)
			end := e.clock.Now()
			b2 := e.srv.ConnectClientVPN(epB, awstest.ClientVPNConnection{CommonName: "b2"})
			e.clock.Advance(50 * time.Second)
			snap := e.poll(s)
			if len(snap.Warnings) != 1 || snap.Complete || !snap.BlindFor(session.KindAWSClientVPN) || snap.BlindFor(session.KindSSH) {
				t.Fatalf("warnings %+v, complete %v", snap.Warnings, snap.Complete)
			}
			w := snap.Warnings[0]
			if w.Code != WarnEndpointUnreadable || w.Source != Name || w.Kind != session.KindAWSClientVPN ||
				!strings.Contains(w.Message, epA) || !strings.Contains(w.Message, code) || strings.Contains(w.Message, epB) {
				t.Errorf("warning = %+v", w)
			}
			if !cmp.Equal(ids(snap.Sessions), []string{a, b, b2}) || len(snap.Ended) != 0 {
				t.Errorf("sessions %v, ended %v; want %s kept as it was and %s's listed", ids(snap.Sessions), ids(snap.Ended), a, epB)
			}
			if diff := cmp.Diff(before.Sessions[0], snap.Sessions[0]); diff != "" {
				t.Errorf("kept session changed:\n%s", diff)
			}

			e.srv.SetClientVPNFailure(epA, "", "")
			e.clock.Advance(time.Minute)
			snap = e.poll(s)
			if !snap.Complete || !cmp.Equal(ids(snap.Sessions), []string{b, b2}) || len(snap.Ended) != 1 ||
				snap.Ended[0].ID != a || !snap.Ended[0].EndedAt.Equal(end) {
				t.Errorf("after recovery: sessions %v, ended %+v, warnings %v", ids(snap.Sessions), snap.Ended, snap.Warnings)
			}
		})
	}
}

// TestAllFailing: no endpoint readable is an error, and the source's
// memory survives it; so does a cancelled poll.
func TestAllFailing(t *testing.T) {
	e := newEnv(t, epA, epB)
	a := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "a"})
	s := e.source(Config{Endpoints: []string{epA, epB}})
	e.poll(s)
	e.srv.SetClientVPNFailure(epA, awstest.CodeUnauthorizedOperation, "no")
	e.srv.SetClientVPNFailure(epB, awstest.CodeRequestLimitExceeded, "slow down")
	e.srv.DisconnectClientVPN(epA, a)
	end := e.clock.Now()
	e.clock.Advance(time.Minute)
	_, err := s.Poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), epA) || !strings.Contains(err.Error(), epB) ||
		!strings.Contains(err.Error(), awstest.CodeRequestLimitExceeded) {
		t.Fatalf("Poll = %v, want an error naming both endpoints", err)
	}
	e.srv.SetClientVPNFailure(epA, "", "")
	e.srv.SetClientVPNFailure(epB, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Poll(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Poll = %v", err)
	}
	snap := e.poll(s)
	if len(snap.Ended) != 1 || snap.Ended[0].ID != a || !snap.Ended[0].EndedAt.Equal(end) {
		t.Errorf("ended after the failures = %+v", snap.Ended)
	}
}

// cancelAfter is the real client, with the context cancelled after n
// calls: a poll cut short between two endpoints.
type cancelAfter struct {
	API
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) DescribeClientVpnConnections(ctx context.Context, in *ec2.DescribeClientVpnConnectionsInput, opts ...func(*ec2.Options)) (*ec2.DescribeClientVpnConnectionsOutput, error) {
	out, err := c.API.DescribeClientVpnConnections(ctx, in, opts...)
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return out, err
}

// TestCancelledBetweenEndpoints: a poll cancelled after the first endpoint
// was listed reports nothing, so the end it saw there is not lost.
func TestCancelledBetweenEndpoints(t *testing.T) {
	e := newEnv(t, epA, epB)
	a := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api := &cancelAfter{API: e.client, cancel: cancel}
	s, err := New(api, Config{Endpoints: []string{epA, epB}, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.poll(s)
	e.srv.DisconnectClientVPN(epA, a)
	e.clock.Advance(time.Minute)
	api.n = 1
	if snap, err := s.Poll(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll cut short = %v, ended %v; want context.Canceled", err, ids(snap.Ended))
	}
	snap := e.poll(s)
	if !cmp.Equal(ids(snap.Ended), []string{a}) {
		t.Errorf("ended after the cancelled poll = %v, want [%s]", ids(snap.Ended), a)
	}
}

// TestVanished: a live connection no longer listed at all (its endpoint
// was unreadable for over an hour) ends at the poll time.
func TestVanished(t *testing.T) {
	e := newEnv(t, epA, epB)
	a := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "a"})
	s := e.source(Config{Endpoints: []string{epA, epB}})
	e.poll(s)
	e.srv.SetClientVPNFailure(epA, awstest.CodeUnauthorizedOperation, "no")
	e.srv.DisconnectClientVPN(epA, a)
	e.clock.Advance(61 * time.Minute)
	if snap := e.poll(s); len(snap.Ended) != 0 || !cmp.Equal(ids(snap.Sessions), []string{a}) {
		t.Fatalf("while failing: sessions %v ended %v", ids(snap.Sessions), ids(snap.Ended))
	}
	e.srv.SetClientVPNFailure(epA, "", "")
	e.clock.Advance(time.Minute)
	snap := e.poll(s)
	if len(snap.Ended) != 1 || snap.Ended[0].ID != a || !snap.Ended[0].EndedAt.Equal(e.clock.Now()) || len(snap.Sessions) != 0 {
		t.Errorf("sessions %v, ended %+v; want %s ended now", ids(snap.Sessions), snap.Ended, a)
	}
}

// TestStatuses: terminating and failed-to-terminate still count as
// connected.
func TestStatuses(t *testing.T) {
	e := newEnv(t, epA)
	x := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "x"})
	y := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "y"})
	s := e.source(Config{Endpoints: []string{epA}})
	e.poll(s)
	e.srv.SetClientVPNStatus(epA, x, awstest.ClientVPNTerminating)
	e.srv.SetClientVPNStatus(epA, y, awstest.ClientVPNFailedToTerminate)
	e.clock.Advance(time.Minute)
	snap := e.poll(s)
	if len(snap.Sessions) != 2 || len(snap.Ended) != 0 || snap.Sessions[0].VPN.Status != "terminating" ||
		snap.Sessions[1].VPN.Status != "failed-to-terminate" {
		t.Errorf("sessions %+v, ended %v", snap.Sessions, ids(snap.Ended))
	}
}

// TestActivity: LastActivityAt starts at StartedAt and moves to the poll
// time whenever ingress bytes grew; egress alone does not count.
func TestActivity(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	e.clock.Advance(5 * time.Second)
	id := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "c"})
	start := e.clock.Now()
	la := func() time.Time {
		t.Helper()
		snap := e.poll(s)
		if len(snap.Sessions) != 1 || snap.Sessions[0].LastActivityAt == nil {
			t.Fatalf("sessions %+v", snap.Sessions)
		}
		return *snap.Sessions[0].LastActivityAt
	}
	steps := []struct {
		in, out uint64
		want    func() time.Time
	}{
		{0, 0, func() time.Time { return start }},
		{0, 5000, func() time.Time { return start }}, // the server talked, not the client
		{300, 0, func() time.Time { return e.clock.Now() }},
		{0, 0, func() time.Time { return e.clock.Now().Add(-time.Minute) }},
		{1, 1, func() time.Time { return e.clock.Now() }},
	}
	for i, st := range steps {
		e.clock.Advance(time.Minute)
		e.srv.AddClientVPNTraffic(epA, id, st.in, st.out)
		if got, want := la(), st.want(); !got.Equal(want) {
			t.Errorf("step %d: last activity %v, want %v", i, got, want)
		}
	}
}

// TestBadFields: unreadable times and counters are warnings, not
// failures; an unknown start time is the first poll that saw it, kept.
func TestBadFields(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "c", EstablishedTimeText: "12/08/2019 07:57"})
	e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "d", EstablishedTimeText: "2026-03-01T12:00:00Z"})
	e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "e", EstablishedTimeText: "2026-03-01 12:00:00.5"})
	e.clock.Advance(30 * time.Second)
	first := e.clock.Now()
	snap := e.poll(s)
	if len(snap.Sessions) != 3 || len(snap.Warnings) != 1 || snap.Blind() {
		t.Fatalf("sessions %d, warnings %+v", len(snap.Sessions), snap.Warnings)
	}
	if w := snap.Warnings[0]; w.Code != WarnBadConnection || !strings.Contains(w.Message, "3 unreadable") ||
		!strings.Contains(w.Message, "connectionEstablishedTime") {
		t.Errorf("warning = %+v", w)
	}
	e.clock.Advance(time.Minute)
	for _, got := range e.poll(s).Sessions {
		if !got.StartedAt.Equal(first) {
			t.Errorf("%s started %v, want the first poll %v", got.User, got.StartedAt, first)
		}
	}
}

func TestParseTime(t *testing.T) {
	good := map[string]time.Time{
		"2019-08-12 07:57:14": time.Date(2019, 8, 12, 7, 57, 14, 0, time.UTC),
		"-":                   {},
		"":                    {},
		"NA":                  {},
	}
	for in, want := range good {
		if got, err := parseTime(in); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"2019-08-12T07:57:14Z", "2019-08-12 07:57:14.5", "2019-08-12 07:57", "2019-8-12 07:57:14", "2019-08-12 25:00:00", " 2019-08-12 07:57:14"} {
		if _, err := parseTime(in); err == nil {
			t.Errorf("parseTime(%q) accepted", in)
		}
	}
}

// TestMemoryBound: ended connections are forgotten once Client VPN stops
// listing them (an hour after they end), and not reported twice before.
func TestMemoryBound(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	const n = 50
	for i := range n {
		id := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "c"})
		e.clock.Advance(time.Second)
		if i%2 == 0 {
			e.srv.DisconnectClientVPN(epA, id)
		}
	}
	first := e.poll(s)
	if len(first.Sessions) != n/2 || len(first.Ended) != n/2 || len(s.conns) != n {
		t.Fatalf("first poll: %d live, %d ended, %d remembered", len(first.Sessions), len(first.Ended), len(s.conns))
	}
	for _, sess := range first.Sessions {
		e.srv.DisconnectClientVPN(epA, sess.ID)
	}
	ends := n / 2
	for i := 0; i < 62; i++ {
		e.clock.Advance(time.Minute)
		t.Logf("DEBUG minute %d", i+1)
		snap := e.poll(s)
		ends += len(snap.Ended)
		if i < 55 && len(s.conns) != n {
			t.Fatalf("minute %d: %d remembered, want %d (still listed)", i+1, len(s.conns), n)
		}
	}
	if ends != n {
		t.Errorf("%d ends reported, want %d", ends, n)
	}
	if len(s.conns) != 0 {
		t.Errorf("after an hour: %d connections remembered, want 0", len(s.conns))
	}
	if got := len(e.srv.ClientVPNConnections(epA)); got != 0 {
		t.Errorf("server still lists %d", got)
	}
}

// Compile-time check: the agent's source contract.
var _ interface {
	Name() string
	Kind() session.Kind
	Poll(context.Context) (session.Snapshot, error)
} = (*Source)(nil)
