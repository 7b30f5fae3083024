// Package connect is `connwatch connect`, an OpenSSH ProxyCommand for EC2
// instances that may be stopped. It finds the instance (by id or Name
// tag), starts it when it is stopped or hibernated, waits until it runs
// and its SSH port accepts, then splices standard input and output to the
// TCP connection. Concurrent connects to one instance make one
// StartInstances call: a lock file per instance serialises the decision.
//
// Progress goes to Options.Progress (standard error): standard output is
// the SSH byte stream and carries nothing else. All waiting runs on the
// injected clock and is bounded by Options.Timeout.
package connect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/termtext"
)

// HoldTag is the tag --hold sets on an instance it started, its value
// the RFC 3339 time until which the agent there keeps it up: the one the
// agent's start hold reads.
const HoldTag = hold.StartHoldTag

// Defaults of Options.
const (
	DefaultPort    = 22
	DefaultTimeout = 5 * time.Minute
	// DefaultPollInterval is the DescribeInstances cadence while the
	// instance is pending or stopping (EC2's own waiters take 15 s).
	DefaultPollInterval = 2 * time.Second
	// DefaultDialInterval is the cadence of connection attempts to the
	// SSH port, DefaultDialTimeout how long each may take: the first SSH
	// byte goes out within about DefaultDialInterval of sshd accepting.
	DefaultDialInterval = 250 * time.Millisecond
	DefaultDialTimeout  = time.Second
	// callTimeout bounds one AWS call.
	callTimeout = 30 * time.Second
	// stoppedAfterStart is how long a stopped state after StartInstances
	// is taken for EC2's eventual consistency rather than a failed start.
	stoppedAfterStart = 10 * time.Second
)

// Options say what to connect to and how.
type Options struct {
	// Client is the EC2 API, usually *ec2.Client.
	Client EC2
	// Region only names the region in messages.
	Region string
	Target Target
	// Port is the SSH port; zero means DefaultPort.
	Port    int
	Address Address
	// Timeout bounds all waiting: for the lock, for the instance to run,
	// for sshd. Zero means DefaultTimeout.
	Timeout time.Duration
	// Hold, when positive, tags an instance this connect started with
	// HoldTag = now + Hold.
	Hold time.Duration
	// LockDir holds the per-instance lock files; "" is DefaultLockDir().
	LockDir string
	// Progress receives "connwatch: ..." lines; nil discards them.
	Progress io.Writer
	// Clock is the time source; nil is the system clock.
	Clock clock.Clock
	// Dial makes one TCP connection; nil is a net.Dialer's DialContext.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// PollInterval, DialInterval and DialTimeout: zero means the
	// defaults above.
	PollInterval, DialInterval, DialTimeout time.Duration
}

// Run connects to the instance (Dial) and splices in and out to the
// connection (Splice) until the server closes it.
func Run(ctx context.Context, o Options, in io.Reader, out io.Writer) error {
	conn, err := Dial(ctx, o)
	if err != nil {
		return err
	}
	return Splice(ctx, conn, in, out)
}

// Dial finds the instance, starts it if needed, waits for it to run and
// for its SSH port to accept, and returns the connection. A running
// instance costs one DescribeInstances call before the connection.
func Dial(ctx context.Context, o Options) (net.Conn, error) {
	r, err := newRun(o)
	if err != nil {
		return nil, err
	}
	return r.connect(ctx)
}

// run is one Dial.
type run struct {
	Options
	begin time.Duration // mono() at the start

	dirOnce sync.Once
	dirErr  error // prepareLockDir's answer, asked once
}

// lockDirOK tells whether the lock directory is there and this user's
// alone (asked once a run: the address file is read and written there).
func (r *run) lockDirOK() bool {
	r.dirOnce.Do(func() { r.dirErr = prepareLockDir(r.LockDir) })
	return r.dirErr == nil
}

func newRun(o Options) (*run, error) {
	if o.Client == nil {
		return nil, errors.New("connect: no EC2 client")
	}
	if o.Target.ID == "" && o.Target.Name == "" {
		return nil, fmt.Errorf("connect: no instance: %w", ErrBadTarget)
	}
	if _, err := ParseAddress(string(o.Address)); err != nil {
		return nil, err
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.LockDir == "" {
		o.LockDir = DefaultLockDir()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.DialInterval <= 0 {
		o.DialInterval = DefaultDialInterval
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	r := &run{Options: o}
	r.begin = r.mono()
	return r, nil
}

// mono reads a clock that wall-clock steps do not move.
func (r *run) mono() time.Duration {
	if e := r.Clock.Elapsed(); e > 0 {
		return e
	}
	return time.Duration(r.Clock.Now().UnixNano())
}

// since is how long ago mono read t.
func (r *run) since(t time.Duration) time.Duration { return r.mono() - t }

// left is what remains of the timeout.
func (r *run) left() time.Duration { return r.Timeout - r.since(r.begin) }

func (r *run) progress(format string, a ...any) {
	fmt.Fprintf(r.Progress, "connwatch: "+format+"\n", a...)
}

// timeout is the error for the timeout running out while waiting for
// what; cause, if any, is the last thing that went wrong.
func (r *run) timeout(what string, cause error) error {
	if cause != nil {
		return fmt.Errorf("connect %s: %w after %v waiting for %s; last: %w", r.Target, ErrTimeout, r.Timeout, what, cause)
	}
	return fmt.Errorf("connect %s: %w after %v waiting for %s", r.Target, ErrTimeout, r.Timeout, what)
}

// sleep waits d on the clock, or less if the timeout comes first, in
// which case it returns the timeout error for what.
func (r *run) sleep(ctx context.Context, d time.Duration, what string, cause error) error {
	left := r.left()
	if left <= 0 {
		return r.timeout(what, cause)
	}
	if d <= 0 {
		return nil
	}
	t := r.Clock.NewTimer(min(d, left))
	defer t.Stop()
	select {
	case <-t.C():
	case <-ctx.Done():
		return interrupted(ctx)
	}
	if r.left() <= 0 {
		return r.timeout(what, cause)
	}
	return nil
}

func interrupted(ctx context.Context) error {
	return fmt.Errorf("connect: interrupted: %w", context.Cause(ctx))
}

// call bounds one AWS call by callTimeout and what is left of the
// timeout.
func (r *run) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(min(callTimeout, r.left()), time.Second))
}

func (r *run) connect(ctx context.Context) (net.Conn, error) {
	// Dial where the instance answered last time while EC2 says where it
	// is now; pre is used only if the two agree.
	var pre *early
	if hp := r.lastAddr(r.Target.ID); hp != "" {
		pre = r.dialEarly(ctx, hp)
	}
	return r.reach(ctx, pre)
}

// reach finds the instance, wakes it if need be, and connects to its SSH
// port, using pre when it dialled the address the instance has.
func (r *run) reach(ctx context.Context, pre *early) (net.Conn, error) {
	defer pre.drop() // unless taken
	cctx, cancel := r.call(ctx)
	var in types.Instance
	var err error
	if r.Target.ID != "" {
		in, err = describe(cctx, r.Client, r.Target.ID, r.Region)
	} else {
		in, err = findByName(cctx, r.Client, r.Target.Name, r.Region)
	}
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(ctx)
		}
		return nil, err
	}
	woke := false
	if state(in) != types.InstanceStateNameRunning {
		if in, err = r.wake(ctx, in); err != nil {
			return nil, err
		}
		woke = true
	}
	addr, kind, err := address(in, r.Address)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", r.Target, err)
	}
	hostport := net.JoinHostPort(addr, strconv.Itoa(r.Port))
	id := aws.ToString(in.InstanceId)
	known := ""
	if pre != nil {
		known = pre.hostport
	}
	if !woke && hostport == known {
		if conn := pre.take(); conn != nil {
			return conn, nil
		}
	}
	if woke {
		r.progress("connecting to %s (%s address)", hostport, kind)
	}
	conn, err := r.dialSSH(ctx, hostport, woke)
	if err == nil {
		r.remember(id, hostport, known)
	}
	return conn, err
}

// wake takes the instance's lock and brings it from whatever state it is
// in to running, starting it if it is (or once it is) stopped.
func (r *run) wake(ctx context.Context, in types.Instance) (types.Instance, error) {
	id := aws.ToString(in.InstanceId)
	if s := state(in); gone(s) {
		return in, terminated(id, s)
	}
	waitFrom := r.mono()
	unlock, err := r.lock(ctx, id)
	if err != nil {
		return in, err
	}
	defer unlock()

	startedAt := time.Duration(-1)
	told := types.InstanceStateName("")
	var lastErr error
	for {
		cctx, cancel := r.call(ctx)
		in, err = describe(cctx, r.Client, id, r.Region)
		cancel()
		s := state(in)
		switch {
		case ctx.Err() != nil:
			return in, interrupted(ctx)
		case err != nil && transient(err):
			// The SDK retried a few times already; keep polling.
			lastErr = err
			s = ""
		case err != nil:
			return in, err
		default:
			lastErr = nil
		}
		switch s {
		case types.InstanceStateNameRunning:
			from := waitFrom
			if startedAt >= 0 {
				from = startedAt
			}
			r.progress("%s running after %s", id, secs(r.since(from)))
			return in, nil
		case types.InstanceStateNameStopped:
			if startedAt >= 0 {
				if r.since(startedAt) < stoppedAfterStart {
					break // EC2 may not show the start yet
				}
				return in, fmt.Errorf("connect %s: %w: the instance went back to stopped: %s", id, ErrStartFailed, stateReason(in))
			}
			kind := "stopped"
			if hibernated(in) {
				kind = "hibernated"
			}
			r.progress("starting %s (%s, %s)", id, kind, termtext.Escape(string(in.InstanceType)))
			retry, err := r.start(ctx, id)
			if err != nil {
				return in, err
			}
			if retry {
				break // it changed state under us: look again
			}
			startedAt = r.mono()
			told = types.InstanceStateNamePending
			r.hold(ctx, id)
			continue // see at once what EC2 says now
		case types.InstanceStateNamePending, types.InstanceStateNameStopping:
			if told != s {
				what := "waiting for it to run"
				if s == types.InstanceStateNameStopping {
					what = "waiting for it to stop, then starting it"
				}
				r.progress("%s is %s; %s", id, s, what)
				told = s
			}
		case types.InstanceStateNameTerminated, types.InstanceStateNameShuttingDown:
			return in, terminated(id, s)
		}
		what := fmt.Sprintf("%s to run", id)
		switch s {
		case types.InstanceStateNameStopping:
			what = fmt.Sprintf("%s to stop (it was stopping) before starting it", id)
		case "": // not known: the last describe failed
		default:
			what = fmt.Sprintf("%s to run (it is %s)", id, s)
		}
		if err := r.sleep(ctx, r.PollInterval, what, lastErr); err != nil {
			return in, err
		}
	}
}

// terminated is the error for an instance in state s, which is gone.
func terminated(id string, s types.InstanceStateName) error {
	return fmt.Errorf("connect %s: the instance is %s: %w", id, s, ErrTerminated)
}

// start sends StartInstances. retry is true when EC2 says the instance
// is in a state it cannot be started from (it changed under us).
func (r *run) start(ctx context.Context, id string) (retry bool, err error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	_, err = r.Client.StartInstances(cctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
	switch {
	case err == nil:
		return false, nil
	case ctx.Err() != nil:
		return false, interrupted(ctx)
	case errorCode(err) == "IncorrectInstanceState":
		return true, nil
	}
	return false, &APIError{Op: "start instance " + id, Action: iamStart, Err: err}
}

// hold tags an instance this connect started with HoldTag, if asked to.
// A failure is a warning: the agent's boot grace still protects the
// instance.
func (r *run) hold(ctx context.Context, id string) {
	if r.Hold <= 0 {
		return
	}
	until := r.Clock.Now().Add(r.Hold).UTC().Truncate(time.Second).Format(time.RFC3339)
	cctx, cancel := r.call(ctx)
	defer cancel()
	_, err := r.Client.CreateTags(cctx, &ec2.CreateTagsInput{
		Resources: []string{id},
		Tags:      []types.Tag{{Key: aws.String(HoldTag), Value: aws.String(until)}},
	})
	if err != nil {
		err = &APIError{Op: "tag " + id + " " + HoldTag, Action: iamTag, Err: err}
		r.progress("warning: --hold: %v; only the agent's --boot-grace keeps the instance up until the first session", err)
		return
	}
	r.progress("%s held up until %s (tag %s)", id, until, HoldTag)
}

// lock takes the instance's lock, waiting for another connect that holds
// it (bounded by the timeout). The returned function releases it.
func (r *run) lock(ctx context.Context, id string) (func(), error) {
	f, err := openLock(r.LockDir, id)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	unlock := func() { f.Close() } // closing releases the flock
	ok, err := tryFlock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	if ok {
		return unlock, nil
	}
	what := "another connwatch to start " + id + " (lock " + f.Name() + ")"
	left := r.left()
	if left <= 0 {
		f.Close()
		return nil, r.timeout(what, nil)
	}
	r.progress("waiting for another connwatch that is starting %s", id)
	// flock has no timeout: wait for it in a goroutine, and if we give
	// up, that goroutine releases the lock as soon as it gets it.
	got := make(chan error, 1)
	go func() { got <- flock(f) }()
	t := r.Clock.NewTimer(left)
	defer t.Stop()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("connect %s: %w", id, err)
		}
		return unlock, nil
	case <-t.C():
		err = r.timeout(what, nil)
	case <-ctx.Done():
		err = interrupted(ctx)
	}
	go func() {
		<-got
		f.Close()
	}()
	return nil, err
}

// dialSSH connects to hostport, trying again every DialInterval (each
// attempt given DialTimeout) until it accepts or the timeout runs out.
func (r *run) dialSSH(ctx context.Context, hostport string, woke bool) (net.Conn, error) {
	from := r.mono()
	told := false
	for {
		tried := r.mono()
		actx, cancel := context.WithTimeout(ctx, r.DialTimeout)
		conn, err := r.Dial(actx, "tcp", hostport)
		cancel()
		if err == nil {
			if woke || told {
				r.progress("sshd answering after %s", secs(r.since(from)))
			}
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, interrupted(ctx)
		}
		if !told && !woke {
			r.progress("%s not answering yet (%v); trying again for up to %v", hostport, err, r.left().Round(time.Second))
			told = true
		}
		if err := r.sleep(ctx, r.DialInterval-r.since(tried), "sshd on "+hostport, err); err != nil {
			return nil, err
		}
	}
}

// address picks the instance's address of the kind asked for and says
// which kind it was.
func address(in types.Instance, want Address) (string, Address, error) {
	public, private := aws.ToString(in.PublicIpAddress), aws.ToString(in.PrivateIpAddress)
	switch want {
	case AddressAuto:
		if public != "" {
			return public, AddressPublic, nil
		}
		if private != "" {
			return private, AddressPrivate, nil
		}
		return "", "", fmt.Errorf("%w: the instance has neither a public nor a private IPv4 address (try --address ipv6)", ErrNoAddress)
	case AddressPublic:
		if public != "" {
			return public, AddressPublic, nil
		}
	case AddressPrivate:
		if private != "" {
			return private, AddressPrivate, nil
		}
	case AddressIPv6:
		if a := ipv6(in); a != "" {
			return a, AddressIPv6, nil
		}
	}
	return "", "", fmt.Errorf("%w: the instance has no %s address", ErrNoAddress, want)
}

// ipv6 is the instance's primary IPv6 address, else the first one of
// its first network interface.
func ipv6(in types.Instance) string {
	if a := aws.ToString(in.Ipv6Address); a != "" {
		return a
	}
	var first string
	best := int32(1 << 30)
	for _, ni := range in.NetworkInterfaces {
		idx := int32(1 << 29)
		if ni.Attachment != nil && ni.Attachment.DeviceIndex != nil {
			idx = *ni.Attachment.DeviceIndex
		}
		for _, a := range ni.Ipv6Addresses {
			addr := aws.ToString(a.Ipv6Address)
			if addr == "" {
				continue
			}
			if aws.ToBool(a.IsPrimaryIpv6) {
				return addr
			}
			if idx < best {
				first, best = addr, idx
			}
		}
	}
	return first
}

// secs formats a duration as whole seconds, "31 s".
func secs(d time.Duration) string {
	return strconv.FormatInt(int64(d.Round(time.Second)/time.Second), 10) + " s"
}
