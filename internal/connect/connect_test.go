package connect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

const id = "i-0123456789abcdef0"

// setup returns Options for a Dial of target against f, the fake sshd
// s and clock clk, progress going to the returned buffer.
func setup(t *testing.T, f *fakeEC2, s *sshd, clk clock.Clock, target string) (Options, *testproc.Buffer) {
	t.Helper()
	tg, err := ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	var progress testproc.Buffer
	return Options{
		Client: f, Region: "eu-west-1", Target: tg, Port: s.port,
		LockDir: t.TempDir(), Clock: clk, Dial: f.dial, Progress: &progress,
	}, &progress
}

func dialOK(t *testing.T, o Options) {
	t.Helper()
	conn, err := Dial(t.Context(), o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	readBanner(t, conn)
}

func TestRunningConnectsAtOnce(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNameRunning, public: s.host, private: "10.0.0.1"})
	o, progress := setup(t, f, s, clk, id)
	o.Hold = 10 * time.Minute
	dialOK(t, o)
	want := map[string]int{"DescribeInstances": 1}
	if d := cmp.Diff(want, f.calls); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	if progress.String() != "" {
		t.Errorf("progress for a running instance: %q", progress)
	}
	if !clk.Now().Equal(t0) {
		t.Errorf("clock moved by %v: something waited", clk.Now().Sub(t0))
	}
}

func TestStartsStoppedInstance(t *testing.T) {
	for _, hibernate := range []bool{false, true} {
		t.Run(fmt.Sprintf("hibernated=%v", hibernate), func(t *testing.T) {
			clk := newAutoClock()
			s := newSSHD(t)
			in := &fakeInstance{id: id, state: types.InstanceStateNameStopped, public: s.host, private: "10.0.0.1",
				pendingFor: 31 * time.Second, sshdDelay: 9 * time.Second}
			kind := "stopped"
			if hibernate {
				in.reason, kind = "Client.UserInitiatedHibernate", "hibernated"
			}
			f := newFake(clk, in)
			o, progress := setup(t, f, s, clk, id)
			o.Hold = 10 * time.Minute
			dialOK(t, o)

			// Polled every 2 s: running seen at 32 s; sshd up at 40 s,
			// tried every 250 ms: connected at 40 s exactly.
			want := fmt.Sprintf(`connwatch: starting %[1]s (%[2]s, t3.large)
connwatch: %[1]s held up until 2026-12-05T09:10:00Z (tag connwatch:hold-until)
connwatch: %[1]s running after 32 s
connwatch: connecting to 127.0.0.1:%[3]d (public address)
connwatch: sshd answering after 8 s
`, id, kind, s.port)
			if d := cmp.Diff(want, progress.String()); d != "" {
				t.Errorf("progress (-want +got):\n%s", d)
			}
			if got := clk.Now().Sub(t0); got != 40*time.Second {
				t.Errorf("connected at %v, want 40s: sshd accepted at 40s", got)
			}
			if f.count("StartInstances") != 1 || f.count("CreateTags") != 1 {
				t.Errorf("calls %v, want one StartInstances and one CreateTags", f.calls)
			}
			if got := in.tags[HoldTag]; got != "2026-12-05T09:10:00Z" {
				t.Errorf("hold tag %q", got)
			}
			if s.count() != 1 {
				t.Errorf("%d connections to sshd, want 1", s.count())
			}
		})
	}
}

// A stopping instance is started once it has stopped; a pending one
// (someone else started it) is waited for, and --hold sends nothing.
func TestWaitsForStoppingAndPending(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	stopping := &fakeInstance{id: id, name: "a", state: types.InstanceStateNameStopping, stoppedAt: t0.Add(9 * time.Second),
		public: s.host, pendingFor: 20 * time.Second}
	f := newFake(clk, stopping)
	o, progress := setup(t, f, s, clk, id)
	o.Hold = time.Hour
	dialOK(t, o)
	want := fmt.Sprintf(`connwatch: %[1]s is stopping; waiting for it to stop, then starting it
connwatch: starting %[1]s (stopped, t3.large)
connwatch: %[1]s held up until 2026-12-05T10:00:10Z (tag connwatch:hold-until)
connwatch: %[1]s running after 20 s
connwatch: connecting to 127.0.0.1:%[2]d (public address)
connwatch: sshd answering after 0 s
`, id, s.port)
	if d := cmp.Diff(want, progress.String()); d != "" {
		t.Errorf("stopping: progress (-want +got):\n%s", d)
	}
	if f.count("StartInstances") != 1 {
		t.Errorf("stopping: %d starts", f.count("StartInstances"))
	}

	clk = newAutoClock()
	pending := &fakeInstance{id: id, state: types.InstanceStateNamePending, startedAt: t0.Add(-5 * time.Second),
		pendingFor: 12 * time.Second, public: s.host}
	f = newFake(clk, pending)
	o, progress = setup(t, f, s, clk, id)
	o.Hold = time.Hour
	dialOK(t, o)
	if f.count("StartInstances") != 0 || f.count("CreateTags") != 0 {
		t.Errorf("pending: calls %v, want no start and no tag", f.calls)
	}
	if !strings.HasPrefix(progress.String(), "connwatch: "+id+" is pending; waiting for it to run\nconnwatch: "+id+" running after 8 s\n") {
		t.Errorf("pending: progress %q", progress)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		target string
		insts  []*fakeInstance
		errs   map[string][]error
		sshd   time.Duration // sshdDelay
		opts   func(*Options)
		is     error
		want   string
	}{
		{name: "terminated", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameTerminated}},
			is: ErrTerminated, want: "connect " + id + ": the instance is terminated"},
		{name: "shutting down", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameShuttingDown}},
			is: ErrTerminated, want: "the instance is shutting-down"},
		{name: "not found", target: "i-0000000000000000f", insts: []*fakeInstance{{id: id, state: types.InstanceStateNameRunning}},
			is: ErrNotFound, want: "find instance i-0000000000000000f in eu-west-1: not found (InvalidInstanceID.NotFound: The instance ID 'i-0000000000000000f' does not exist)"},
		{name: "name not found", target: "name:dev", insts: []*fakeInstance{{id: id, name: "other", state: types.InstanceStateNameRunning}},
			is: ErrNotFound, want: `find instance named "dev" in eu-west-1: not found`},
		{name: "name only terminated", target: "name:dev", insts: []*fakeInstance{{id: id, name: "dev", state: types.InstanceStateNameTerminated}},
			is: ErrNotFound, want: `find instance named "dev" in eu-west-1: not found, only ` + id + ` (terminated, "dev")`},
		{name: "name ambiguous", target: "name:dev", insts: []*fakeInstance{
			{id: "i-0000000000000000b", name: "dev", state: types.InstanceStateNameStopped},
			{id: "i-0000000000000000a", name: "dev", state: types.InstanceStateNameRunning},
			{id: "i-0000000000000000c", name: "dev", state: types.InstanceStateNameTerminated},
		}, is: ErrAmbiguous, want: `find instance named "dev" in eu-west-1: more than one instance has that Name tag: i-0000000000000000a (running, "dev"), i-0000000000000000b (stopped, "dev"); give the instance id`},
		{name: "describe refused", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameRunning}},
			errs: map[string][]error{"DescribeInstances": {apiErr("UnauthorizedOperation", "You are not authorized to perform this operation.")}},
			want: "describe instance " + id + ": UnauthorizedOperation: You are not authorized to perform this operation. (the IAM policy must allow ec2:DescribeInstances)"},
		{name: "start refused", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameStopped}},
			errs: map[string][]error{"StartInstances": {apiErr("UnauthorizedOperation", "You are not authorized to perform this operation.")}},
			want: "start instance " + id + ": UnauthorizedOperation: You are not authorized to perform this operation. (the IAM policy must allow ec2:StartInstances)"},
		{name: "no capacity", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameStopped}},
			errs: map[string][]error{"StartInstances": {apiErr("InsufficientInstanceCapacity", "We currently do not have sufficient t3.large capacity.")}},
			want: "start instance " + id + ": InsufficientInstanceCapacity: We currently do not have sufficient t3.large capacity."},
		{name: "start fails", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameStopped, pendingFor: 4 * time.Second, failStart: "Server.InternalError"}},
			is: ErrStartFailed, want: "connect " + id + ": start failed: the instance went back to stopped: Server.InternalError: the reason"},
		{name: "pending forever", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNamePending, pendingFor: time.Hour}},
			is: ErrTimeout, want: "connect " + id + ": timed out after 5m0s waiting for " + id + " to run (it is pending)"},
		{name: "stopping forever", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameStopping, stoppedAt: t0.Add(time.Hour)}},
			opts: func(o *Options) { o.Timeout = time.Minute },
			is:   ErrTimeout, want: "timed out after 1m0s waiting for " + id + " to stop (it was stopping) before starting it"},
		{name: "sshd never answers", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameRunning}}, sshd: time.Hour,
			opts: func(o *Options) { o.Timeout = 30 * time.Second },
			is:   ErrTimeout, want: "timed out after 30s waiting for sshd on 127.0.0.1:"},
		{name: "throttled to the end", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNamePending, pendingFor: time.Hour}},
			errs: map[string][]error{"DescribeInstances": {nil, nil, apiErr("RequestLimitExceeded", "Request limit exceeded."), apiErr("RequestLimitExceeded", "Request limit exceeded.")}},
			opts: func(o *Options) { o.Timeout = 6 * time.Second },
			is:   ErrTimeout, want: "waiting for " + id + " to run; last: describe instance " + id + ": RequestLimitExceeded: Request limit exceeded."},
		{name: "no public address", target: id, insts: []*fakeInstance{{id: id, state: types.InstanceStateNameRunning, private: "10.0.0.1"}},
			opts: func(o *Options) { o.Address = AddressPublic },
			is:   ErrNoAddress, want: "connect " + id + ": no address: the instance has no public address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newAutoClock()
			s := newSSHD(t)
			for _, in := range tt.insts {
				if in.public == "" && in.private == "" {
					in.public = s.host
				}
				in.sshdDelay = tt.sshd
			}
			f := newFake(clk, tt.insts...)
			for op, errs := range tt.errs {
				f.errs[op] = errs
			}
			o, _ := setup(t, f, s, clk, tt.target)
			if tt.opts != nil {
				tt.opts(&o)
			}
			conn, err := Dial(t.Context(), o)
			if err == nil {
				conn.Close()
				t.Fatalf("Dial succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tt.want)
			}
			if s.count() != 0 {
				t.Errorf("%d connections to sshd", s.count())
			}
		})
	}
}

// Throttling while polling is retried; IncorrectInstanceState from a
// start (the instance moved under us) makes connect look again; a
// refused CreateTags is a warning.
func TestRecovers(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	in := &fakeInstance{id: id, state: types.InstanceStateNameStopped, public: s.host, pendingFor: 10 * time.Second}
	f := newFake(clk, in)
	f.errs["DescribeInstances"] = []error{nil, nil, nil, apiErr("RequestLimitExceeded", "Request limit exceeded."), nil}
	f.errs["StartInstances"] = []error{apiErr("IncorrectInstanceState", "The instance is not in a state from which it can be started.")}
	f.errs["CreateTags"] = []error{apiErr("UnauthorizedOperation", "You are not authorized to perform this operation.")}
	o, progress := setup(t, f, s, clk, id)
	o.Hold = 10 * time.Minute
	dialOK(t, o)
	if f.count("StartInstances") != 2 {
		t.Errorf("%d StartInstances, want 2 (one refused)", f.count("StartInstances"))
	}
	if want := "connwatch: warning: --hold: tag " + id + " connwatch:hold-until: UnauthorizedOperation: You are not authorized to perform this operation. (the IAM policy must allow ec2:CreateTags); only the agent's --boot-grace keeps the instance up until the first session\n"; !strings.Contains(progress.String(), want) {
		t.Errorf("progress %q lacks the warning %q", progress, want)
	}
}

// The Name tag is looked up exactly: EC2 filter wildcards in it are
// escaped, and a stopped match is started.
func TestByName(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	f := newFake(clk,
		&fakeInstance{id: "i-0000000000000000a", name: "dev*", state: types.InstanceStateNameStopped, public: s.host},
		&fakeInstance{id: "i-0000000000000000b", name: "dev*", state: types.InstanceStateNameTerminated},
		&fakeInstance{id: "i-0000000000000000c", name: "devbox", state: types.InstanceStateNameRunning},
	)
	o, progress := setup(t, f, s, clk, "name:dev*")
	dialOK(t, o)
	if !strings.HasPrefix(progress.String(), "connwatch: starting i-0000000000000000a (stopped, t3.large)\n") {
		t.Errorf("progress %q", progress)
	}
}

// Without --address the public address is used, else the private one.
func TestAddress(t *testing.T) {
	in := types.Instance{
		PublicIpAddress:  aws.String("203.0.113.7"),
		PrivateIpAddress: aws.String("10.0.0.7"),
		NetworkInterfaces: []types.InstanceNetworkInterface{
			{Attachment: &types.InstanceNetworkInterfaceAttachment{DeviceIndex: aws.Int32(1)}, Ipv6Addresses: []types.InstanceIpv6Address{{Ipv6Address: aws.String("2001:db8::1")}}},
			{Attachment: &types.InstanceNetworkInterfaceAttachment{DeviceIndex: aws.Int32(0)}, Ipv6Addresses: []types.InstanceIpv6Address{{Ipv6Address: aws.String("2001:db8::2")}}},
		},
	}
	privateOnly := types.Instance{PrivateIpAddress: aws.String("10.0.0.7")}
	primary6 := types.Instance{NetworkInterfaces: []types.InstanceNetworkInterface{{Ipv6Addresses: []types.InstanceIpv6Address{
		{Ipv6Address: aws.String("2001:db8::a")}, {Ipv6Address: aws.String("2001:db8::b"), IsPrimaryIpv6: aws.Bool(true)}}}}}
	tests := []struct {
		in       types.Instance
		want     Address
		addr     string
		kind     Address
		noAddres bool
	}{
		{in, AddressAuto, "203.0.113.7", AddressPublic, false},
		{in, AddressPublic, "203.0.113.7", AddressPublic, false},
		{in, AddressPrivate, "10.0.0.7", AddressPrivate, false},
		{in, AddressIPv6, "2001:db8::2", AddressIPv6, false},
		{privateOnly, AddressAuto, "10.0.0.7", AddressPrivate, false},
		{privateOnly, AddressPublic, "", "", true},
		{privateOnly, AddressIPv6, "", "", true},
		{primary6, AddressIPv6, "2001:db8::b", AddressIPv6, false},
		{types.Instance{}, AddressAuto, "", "", true},
	}
	for i, tt := range tests {
		addr, kind, err := address(tt.in, tt.want)
		if addr != tt.addr || kind != tt.kind || errors.Is(err, ErrNoAddress) != tt.noAddres {
			t.Errorf("%d: address(%s) = %q, %q, %v; want %q, %q", i, tt.want, addr, kind, err, tt.addr, tt.kind)
		}
	}
}

// A cancelled context ends the wait at once.
func TestInterrupted(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newSSHD(t)
	f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNamePending, pendingFor: time.Hour, public: s.host})
	o, _ := setup(t, f, s, clk, id)
	ctx, cancel := context.WithCancel(t.Context())
	f.onDescribe = cancel
	_, err := Dial(ctx, o)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("Dial: %v, want interrupted", err)
	}
}

// A Name is sent as a literal: EC2's wildcards and their escape are
// escaped (TestByName cannot see this: the exact Name is checked again on
// the answer).
func TestEscapeFilter(t *testing.T) {
	for in, want := range map[string]string{
		"dev":      "dev",
		"dev*":     `dev\*`,
		"a?b":      `a\?b`,
		`back\sl*`: `back\\sl\*`,
	} {
		if got := escapeFilter(in); got != want {
			t.Errorf("escapeFilter(%q) = %q, want %q", in, got, want)
		}
	}
}
