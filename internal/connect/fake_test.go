package connect

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/connwatch/connwatch/internal/clock"
)

// t0 is when the fake clocks start.
var t0 = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

// autoClock is a fake clock on which every timer fires at once, the
// clock moving forward by its duration: code that only sleeps runs
// through minutes of waiting in microseconds. Not for code that waits
// for a timer or something else (the lock wait): there, use clock.Fake.
type autoClock struct{ *clock.Fake }

func newAutoClock() autoClock { return autoClock{clock.NewFake(t0)} }

func (c autoClock) NewTimer(d time.Duration) clock.Timer {
	t := c.Fake.NewTimer(d)
	c.Fake.Advance(d)
	return t
}

// fakeInstance is one instance of fakeEC2. Its state moves with the
// clock: pending turns running pendingFor after the start, stopping
// turns stopped at stoppedAt.
type fakeInstance struct {
	id, name, typ        string
	state                types.InstanceStateName
	reason               string // StateReason code
	public, private      string
	pendingFor           time.Duration
	startedAt, stoppedAt time.Time
	failStart            string // after pendingFor, back to stopped with this reason
	tags                 map[string]string
	runningAt            time.Time
	sshdDelay            time.Duration // sshd accepts this long after running
}

// fakeEC2 implements EC2 over fakeInstances and counts calls.
type fakeEC2 struct {
	mu    sync.Mutex
	clock clock.Clock
	insts []*fakeInstance
	calls map[string]int
	// errs are returned by the next calls of an operation, in order
	// (nil: that call succeeds).
	errs map[string][]error
	// onDescribe and onStart run (without the lock) on every call.
	onDescribe, onStart func()
}

var _ EC2 = (*fakeEC2)(nil)

func newFake(c clock.Clock, insts ...*fakeInstance) *fakeEC2 {
	for _, in := range insts {
		if in.typ == "" {
			in.typ = "t3.large"
		}
		if in.state == types.InstanceStateNameRunning {
			in.runningAt = c.Now()
		}
		if in.state == types.InstanceStateNamePending && in.startedAt.IsZero() {
			in.startedAt = c.Now()
		}
	}
	return &fakeEC2{clock: c, insts: insts, calls: map[string]int{}, errs: map[string][]error{}}
}

func apiErr(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

func (f *fakeEC2) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeEC2) call(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if q := f.errs[op]; len(q) > 0 {
		f.errs[op] = q[1:]
		return q[0]
	}
	return nil
}

// advance moves in's state along with the clock; with f.mu held.
func (f *fakeEC2) advance(in *fakeInstance) {
	now := f.clock.Now()
	switch {
	case in.state == types.InstanceStateNamePending && !now.Before(in.startedAt.Add(in.pendingFor)):
		if in.failStart != "" {
			in.state, in.reason = types.InstanceStateNameStopped, in.failStart
			return
		}
		in.state = types.InstanceStateNameRunning
		in.runningAt = in.startedAt.Add(in.pendingFor)
	case in.state == types.InstanceStateNameStopping && !now.Before(in.stoppedAt):
		in.state = types.InstanceStateNameStopped
	}
}

func (f *fakeEC2) view(in *fakeInstance) types.Instance {
	f.advance(in)
	out := types.Instance{
		InstanceId:       aws.String(in.id),
		InstanceType:     types.InstanceType(in.typ),
		State:            &types.InstanceState{Name: in.state},
		PrivateIpAddress: aws.String(in.private),
		Tags:             []types.Tag{{Key: aws.String("Name"), Value: aws.String(in.name)}},
	}
	if in.reason != "" {
		out.StateReason = &types.StateReason{Code: aws.String(in.reason), Message: aws.String(in.reason + ": the reason")}
	}
	if in.state == types.InstanceStateNameRunning || in.state == types.InstanceStateNamePending {
		out.PublicIpAddress = aws.String(in.public)
	}
	return out
}

func (f *fakeEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if f.onDescribe != nil {
		defer f.onDescribe()
	}
	if err := f.call("DescribeInstances"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var res types.Reservation
	switch {
	case len(in.InstanceIds) == 1:
		for _, i := range f.insts {
			if i.id == in.InstanceIds[0] {
				res.Instances = append(res.Instances, f.view(i))
			}
		}
		if len(res.Instances) == 0 {
			return nil, apiErr("InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", in.InstanceIds[0]))
		}
	case len(in.Filters) == 1 && aws.ToString(in.Filters[0].Name) == "tag:Name":
		want := strings.NewReplacer(`\*`, `*`, `\?`, `?`, `\\`, `\`).Replace(in.Filters[0].Values[0])
		for _, i := range f.insts {
			if i.name == want {
				res.Instances = append(res.Instances, f.view(i))
			}
		}
	default:
		return nil, fmt.Errorf("fake: unexpected DescribeInstances %+v", in)
	}
	return &ec2.DescribeInstancesOutput{Reservations: []types.Reservation{res}}, nil
}

func (f *fakeEC2) StartInstances(ctx context.Context, in *ec2.StartInstancesInput, _ ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error) {
	if f.onStart != nil {
		f.onStart()
	}
	if err := f.call("StartInstances"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range f.insts {
		if i.id != in.InstanceIds[0] {
			continue
		}
		f.advance(i)
		if i.state != types.InstanceStateNameStopped {
			return nil, apiErr("IncorrectInstanceState", fmt.Sprintf("The instance '%s' is not in a state from which it can be started.", i.id))
		}
		i.state, i.reason, i.startedAt = types.InstanceStateNamePending, "", f.clock.Now()
		return &ec2.StartInstancesOutput{}, nil
	}
	return nil, apiErr("InvalidInstanceID.NotFound", "no such instance")
}

func (f *fakeEC2) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	if err := f.call("CreateTags"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range f.insts {
		if i.id == in.Resources[0] {
			if i.tags == nil {
				i.tags = map[string]string{}
			}
			for _, t := range in.Tags {
				i.tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
		}
	}
	return &ec2.CreateTagsOutput{}, nil
}

// dial is a Dialer for Options.Dial: connections are refused until the
// instance's sshd is up by the fake clock (sshdDelay after it runs).
func (f *fakeEC2) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	refuse := false
	for _, i := range f.insts {
		f.advance(i)
		if i.state == types.InstanceStateNameRunning && f.clock.Now().Before(i.runningAt.Add(i.sshdDelay)) {
			refuse = true
		}
	}
	f.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// sshd is a loopback listener standing in for sshd: it counts
// connections, sends a banner and closes each when the client does.
type sshd struct {
	ln       net.Listener
	host     string
	port     int
	mu       sync.Mutex
	accepted int
}

const banner = "SSH-2.0-fake\r\n"

func newSSHD(t *testing.T) *sshd { t.Helper(); return newSSHDOn(t, "127.0.0.1", 0) }

// newSSHDOn is newSSHD on host and port (0: any).
func newSSHDOn(t *testing.T, host string, port int) *sshd {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	s := &sshd{ln: ln, host: host, port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.Write([]byte(banner))
				var buf [512]byte
				for {
					if _, err := c.Read(buf[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *sshd) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// readBanner checks that conn reaches the fake sshd.
func readBanner(t *testing.T, conn net.Conn) {
	t.Helper()
	buf := make([]byte, len(banner))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != banner {
		t.Fatalf("read banner: %q, %v", buf, err)
	}
}
