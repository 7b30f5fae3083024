package awstest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An EC2 fleet: the instances a test adds with AddInstance, and the
// server's own instance (s.InstanceID, running, the one IMDS describes),
// served over the EC2 Query protocol by DescribeInstances,
// StartInstances, StopInstances (ec2.go), CreateTags and DeleteTags.
//
// States move as on EC2: StartInstances takes a stopped instance to
// pending and, Transitions.Pending later by the server's clock, to
// running; StopInstances takes a running one to stopping and,
// Transitions.Stopping later, to stopped. Those second steps are made by
// the clock's timers, so they happen whether or not anyone asks, and OnState
// tells a test when they do (to start an sshd when an instance comes up).
//
// Addresses follow EC2 too: an instance keeps its private (and IPv6)
// address for life, but an automatically assigned public IPv4 address is
// released when the instance stops and a new one, from the server's
// Addresser, comes with every start; only an Elastic IP stays.
//
// The reply shapes are the ones the SDK's deserializers in service/ec2
// v1.344.1 read (awsEc2query_deserializeDocumentReservation,
// awsEc2query_deserializeDocumentInstance,
// awsEc2query_deserializeDocumentInstanceStateChange):
//
//	<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
//	  <requestId>...</requestId>
//	  <reservationSet>
//	    <item>
//	      <reservationId>r-...</reservationId> <ownerId>123456789012</ownerId>
//	      <instancesSet>
//	        <item>
//	          <instanceId>i-...</instanceId> <imageId>ami-...</imageId>
//	          <instanceState><code>80</code><name>stopped</name></instanceState>
//	          <reason>User initiated (2026-03-01 12:00:00 GMT)</reason>
//	          <instanceType>t3.micro</instanceType>
//	          <launchTime>2026-03-01T11:00:00.000Z</launchTime>
//	          <placement><availabilityZone>eu-west-1a</availabilityZone>...</placement>
//	          <privateIpAddress>172.31.0.11</privateIpAddress>
//	          <ipAddress>198.51.100.1</ipAddress> (public; absent while stopped)
//	          <ipv6Address>2001:db8::11</ipv6Address>
//	          <stateReason><code>Client.UserInitiatedShutdown</code><message>...</message></stateReason>
//	          <tagSet><item><key>Name</key><value>devbox</value></item></tagSet>
//	        </item>
//	      </instancesSet>
//	    </item>
//	  </reservationSet>
//	  <nextToken>...</nextToken>
//	</DescribeInstancesResponse>
//
// DNS names (dnsName, privateDnsName) are left out, as in a VPC without
// DNS hostnames: code under test must connect by address, so that no test
// resolves a name outside the machine.

// Instance states (InstanceStateName).
const (
	InstancePending      = "pending"
	InstanceRunning      = "running"
	InstanceShuttingDown = "shutting-down"
	InstanceTerminated   = "terminated"
	InstanceStopping     = "stopping"
	InstanceStopped      = "stopped"
)

// stateCodes are the states' codes (InstanceState.Code).
var stateCodes = map[string]int{
	InstancePending: 0, InstanceRunning: 16, InstanceShuttingDown: 32,
	InstanceTerminated: 48, InstanceStopping: 64, InstanceStopped: 80,
}

// EC2 error codes of the fleet's actions.
const (
	CodeInstanceNotFound       = "InvalidInstanceID.NotFound"
	CodeInstanceMalformed      = "InvalidInstanceID.Malformed"
	CodeIncorrectInstanceState = "IncorrectInstanceState"
	CodeInvalidPaginationToken = "InvalidPaginationToken"
	// CodeInternalError (HTTP 500) and CodeUnavailable (HTTP 503) are
	// EC2's transient server errors, which the SDK's standard retryer
	// retries by their status, as it retries CodeRequestLimitExceeded by
	// its code.
	CodeInternalError = "InternalError"
	CodeUnavailable   = "Unavailable"
)

// Page sizes DescribeInstances accepts with MaxResults; without it every
// match is one page.
const (
	InstancesMinResults = 5
	InstancesMaxResults = 1000
)

// DefaultInstanceType is the type of instances added without one, and of
// the server's own instance.
const DefaultInstanceType = "t3.micro"

// Instance is one EC2 instance of the fleet, as a test adds it with
// AddInstance and reads it back with Instance.
type Instance struct {
	// ID is the instance id; empty means one is made up in EC2's form
	// (i- and 17 hex digits).
	ID string
	// Type is the instance type; empty means DefaultInstanceType.
	Type string
	// State is one of the Instance* states; empty means running. An
	// instance added pending or stopping moves on as if it had just been
	// started or stopped.
	State string
	// Tags are the instance's tags (key to value).
	Tags map[string]string
	// PublicIP, PrivateIP and IPv6 are the instance's addresses. Empty
	// private (and, while running, public) addresses are filled in by the
	// Addresser when the instance is added; a stopped or terminated
	// instance has no public address unless it is an Elastic IP.
	PublicIP, PrivateIP, IPv6 string
	// ElasticIP makes PublicIP an Elastic IP: kept while the instance is
	// stopped and across starts.
	ElasticIP bool
	// LaunchTime is when the instance last started; zero means the
	// server clock's now. Every start sets it, as on EC2.
	LaunchTime time.Time
	// Hibernated reports whether the last stop was a hibernation; kept
	// by the server and ignored by AddInstance.
	Hibernated bool
}

// Transitions are how long the intermediate states last, by the server's
// clock. Zero means the instance moves on at once (the reply of the
// action still shows the intermediate state, as EC2's always does).
type Transitions struct {
	// Pending is the time from pending to running.
	Pending time.Duration
	// Stopping is the time from stopping to stopped, and from
	// shutting-down to terminated.
	Stopping time.Duration
}

// DefaultTransitions are a new server's Transitions.
var DefaultTransitions = Transitions{Pending: 2 * time.Second, Stopping: 2 * time.Second}

// Addresser hands out an instance's addresses. It is called when an
// instance is added without addresses and each time one starts, with the
// server's lock held: it must not call the server. On a start the public
// address replaces the old one (unless the instance has an Elastic IP); a
// non-empty private or IPv6 address replaces the instance's and an empty
// one keeps it, as a real instance keeps those across a stop and start.
type Addresser func(id string) (public, private, ipv6 string)

// fleetInstance is the server's record of an instance.
type fleetInstance struct {
	Instance
	seq  uint64    // order of addition: listing and paging order
	next string    // the state entered at due, if any
	due  time.Time // when next is entered
	// reason is stateTransitionReason; stateReason and stateMsg are
	// stateReason's code and message. Empty while running.
	reason, stateReason, stateMsg string
}

type stateEvent struct{ id, state string }

// injectedFailure is one FailNext: the next left calls fail.
type injectedFailure struct {
	left      int
	status    int
	code, msg string
}

// fleet is the EC2 fleet part of ec2State; s.mu guards it, except where
// noted.
type fleet struct {
	instances   map[string]*fleetInstance
	seq         uint64
	transitions Transitions
	addresser   Addresser // nil: the default
	defAddr     *defaultAddresser
	failNext    map[string][]*injectedFailure // by action, in turn

	onState    []func(id, state string)
	events     []stateEvent // entered, not yet delivered to onState
	delivering bool         // a goroutine is calling onState
	settled    *sync.Cond   // on s.mu: delivering or events changed

	done   chan struct{} // closed when the test ends
	closed bool
	timers sync.WaitGroup // timer goroutines (not guarded by s.mu)
}

// initFleet sets up the fleet with the server's own instance; called by
// New before the server starts.
func (s *Server) initFleet() {
	f := &s.ec2.fleet
	f.instances = make(map[string]*fleetInstance)
	f.transitions = DefaultTransitions
	f.defAddr = &defaultAddresser{private: make(map[string]string)}
	f.failNext = make(map[string][]*injectedFailure)
	f.settled = sync.NewCond(&s.mu)
	f.done = make(chan struct{})
	s.AddInstance(Instance{ID: s.InstanceID})
}

// closeFleet stops the fleet's timers and waits for their goroutines;
// no OnState callback runs after it returns.
func (s *Server) closeFleet() {
	s.mu.Lock()
	if s.ec2.fleet.closed {
		s.mu.Unlock()
		return
	}
	s.ec2.fleet.closed = true
	s.ec2.fleet.events = nil
	close(s.ec2.fleet.done)
	for s.ec2.fleet.delivering {
		s.ec2.fleet.settled.Wait()
	}
	s.mu.Unlock()
	s.ec2.fleet.timers.Wait()
}

// defaultAddresser hands out TEST-NET addresses: public ones in turn from
// 198.51.100.0/24, 203.0.113.0/24 and 192.0.2.0/24 (a new one for every
// start, wrapping after 762), private ones from 172.31.0.10 up (the
// default VPC's range), one per instance for life.
// It is called with s.mu held.
type defaultAddresser struct {
	public  int
	private map[string]string
}

func (d *defaultAddresser) addresses(id string) (public, private, ipv6 string) {
	nets := [...]string{"198.51.100", "203.0.113", "192.0.2"}
	n := d.public % (254 * len(nets))
	d.public++
	public = fmt.Sprintf("%s.%d", nets[n/254], n%254+1)
	private, ok := d.private[id]
	if !ok {
		k := len(d.private) + 10
		private = fmt.Sprintf("172.31.%d.%d", k/250, k%250)
		d.private[id] = private
	}
	return public, private, ""
}

// SetAddresser sets how instances get addresses; nil restores the
// default, which hands out TEST-NET-2, TEST-NET-3 and TEST-NET-1 public
// addresses in turn (a new one each start) and private addresses from
// 172.31.0.10 up, and no IPv6 address.
func (s *Server) SetAddresser(a Addresser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.fleet.addresser = a
}

// addresser returns the current Addresser; s.mu is held.
func (s *Server) addresserLocked() Addresser {
	if a := s.ec2.fleet.addresser; a != nil {
		return a
	}
	return s.ec2.fleet.defAddr.addresses
}

// SetTransitions sets how long pending and stopping last, for transitions
// that begin after the call.
func (s *Server) SetTransitions(t Transitions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.fleet.transitions = t
}

// OnState adds a callback called each time an instance enters a state
// (not when it is added). Callbacks run one at a time, in the order the
// states were entered, with no lock held; they may call the server's
// methods, but not its API over HTTP. A state shows in an API reply only
// after the callbacks for it have returned, so a test can start a service
// when an instance becomes running and code under test finds it up once
// DescribeInstances says running. Callbacks must therefore not wait for
// the code under test (send on buffered channels).
func (s *Server) OnState(fn func(id, state string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.fleet.onState = append(s.ec2.fleet.onState, fn)
}

// AddInstance adds an instance to the fleet and returns its id. It panics
// if the id is taken or the state unknown.
func (s *Server) AddInstance(in Instance) string {
	if _, ok := stateCodes[in.State]; !ok && in.State != "" {
		panic(fmt.Sprintf("awstest: unknown instance state %q", in.State))
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.ec2.fleet
	f.seq++
	// Made-up ids count up from the position; the first free one is
	// found within len(instances)+1 tries.
	for n := f.seq; in.ID == ""; n++ {
		if id := fmt.Sprintf("i-0%016x", n); f.instances[id] == nil {
			in.ID = id
		}
	}
	if f.instances[in.ID] != nil {
		panic(fmt.Sprintf("awstest: instance %s already exists", in.ID))
	}
	in.Type = cmp.Or(in.Type, DefaultInstanceType)
	in.State = cmp.Or(in.State, InstanceRunning)
	in.Tags = maps.Clone(in.Tags)
	if in.Tags == nil {
		in.Tags = make(map[string]string)
	}
	in.Hibernated = false
	if in.LaunchTime.IsZero() {
		in.LaunchTime = now.UTC().Truncate(time.Second)
	}
	up := in.State == InstancePending || in.State == InstanceRunning || in.State == InstanceStopping
	if in.PrivateIP == "" || (up && in.PublicIP == "") {
		pub, priv, v6 := s.addresserLocked()(in.ID)
		in.PrivateIP = cmp.Or(in.PrivateIP, priv)
		in.IPv6 = cmp.Or(in.IPv6, v6)
		if up && in.PublicIP == "" {
			in.PublicIP = pub
		}
	}
	if !up && !in.ElasticIP {
		in.PublicIP = ""
	}

	fi := &fleetInstance{Instance: in, seq: f.seq}
	f.instances[in.ID] = fi
	switch in.State {
	case InstancePending:
		s.scheduleLocked(fi, InstanceRunning, f.transitions.Pending, now)
	case InstanceStopping:
		fi.setStopReason(now, false)
		s.scheduleLocked(fi, InstanceStopped, f.transitions.Stopping, now)
	case InstanceShuttingDown:
		s.scheduleLocked(fi, InstanceTerminated, f.transitions.Stopping, now)
	case InstanceStopped:
		fi.setStopReason(now, false)
	}
	// Moving on at once (zero Transitions) is no event: the instance
	// was added in the state it reached.
	f.events = slices.DeleteFunc(f.events, func(e stateEvent) bool { return e.id == in.ID })
	return in.ID
}

// Instance returns a copy of an instance of the fleet.
func (s *Server) Instance(id string) (Instance, bool) {
	s.mu.Lock()
	s.advanceLocked(s.clock.Now())
	fi := s.ec2.fleet.instances[id]
	var in Instance
	if fi != nil {
		in = fi.Instance
		in.Tags = maps.Clone(fi.Tags)
	}
	s.mu.Unlock()
	s.deliver(false)
	return in, fi != nil
}

// SetState puts an instance in a state at once, as if EC2 had moved it
// there: from pending it goes on to running, from stopping to stopped and
// from shutting-down to terminated after the Transitions; a stopped or
// terminated instance loses its public address (unless Elastic), and one
// that comes up from stopped gets a new one. OnState callbacks are called.
// It panics if the instance or the state is unknown.
func (s *Server) SetState(id, state string) {
	if _, ok := stateCodes[state]; !ok {
		panic(fmt.Sprintf("awstest: unknown instance state %q", state))
	}
	now := s.clock.Now()
	s.mu.Lock()
	s.advanceLocked(now)
	fi := s.ec2.fleet.instances[id]
	if fi == nil {
		s.mu.Unlock()
		panic(fmt.Sprintf("awstest: no instance %s", id))
	}
	if state == InstanceStopping || state == InstanceStopped {
		fi.setStopReason(now, fi.Hibernated)
	}
	s.enterLocked(fi, state, now)
	s.mu.Unlock()
	s.deliver(false)
}

// setStopReason records a user-initiated stop (or hibernation) at now.
func (fi *fleetInstance) setStopReason(now time.Time, hibernate bool) {
	fi.Hibernated = hibernate
	fi.reason = "User initiated (" + now.UTC().Format("2006-01-02 15:04:05") + " GMT)"
	fi.stateReason, fi.stateMsg = "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown"
	if hibernate {
		fi.stateReason, fi.stateMsg = "Client.UserInitiatedHibernate", "Client.UserInitiatedHibernate: User initiated hibernate"
	}
}

// enterLocked moves fi into state at now: addresses, follow-on transition
// and an event for OnState. s.mu is held; the Addresser is called with it
// held only for instances that come up, which is why a custom Addresser
// must not call the server.
func (s *Server) enterLocked(fi *fleetInstance, state string, now time.Time) {
	f := &s.ec2.fleet
	prev := fi.State
	if prev == state {
		return
	}
	fi.next = ""
	fi.State = state
	f.events = append(f.events, stateEvent{fi.ID, state})
	switch state {
	case InstancePending, InstanceRunning:
		if prev == InstanceStopped || prev == InstanceStopping || fi.PublicIP == "" {
			s.assignLocked(fi)
			fi.LaunchTime = now.UTC().Truncate(time.Second)
		}
		fi.reason, fi.stateReason, fi.stateMsg = "", "", ""
		if state == InstancePending {
			s.scheduleLocked(fi, InstanceRunning, f.transitions.Pending, now)
		}
	case InstanceStopping:
		s.scheduleLocked(fi, InstanceStopped, f.transitions.Stopping, now)
	case InstanceShuttingDown:
		s.scheduleLocked(fi, InstanceTerminated, f.transitions.Stopping, now)
	case InstanceStopped:
		if !fi.ElasticIP {
			fi.PublicIP = ""
		}
	case InstanceTerminated:
		fi.PublicIP, fi.PrivateIP, fi.IPv6 = "", "", ""
	}
}

// assignLocked gives fi the addresses of a start.
func (s *Server) assignLocked(fi *fleetInstance) {
	pub, priv, v6 := s.addresserLocked()(fi.ID)
	if !fi.ElasticIP {
		fi.PublicIP = pub
	}
	fi.PrivateIP = cmp.Or(priv, fi.PrivateIP)
	fi.IPv6 = cmp.Or(v6, fi.IPv6)
}

// scheduleLocked makes fi enter next d after now, by a timer of the
// server's clock; at once if d is not positive.
func (s *Server) scheduleLocked(fi *fleetInstance, next string, d time.Duration, now time.Time) {
	if d <= 0 {
		s.enterLocked(fi, next, now)
		return
	}
	f := &s.ec2.fleet
	fi.next, fi.due = next, now.Add(d)
	if f.closed {
		return
	}
	t := s.clock.NewTimer(d)
	f.timers.Add(1)
	go func() {
		defer f.timers.Done()
		select {
		case <-t.C():
		case <-f.done:
			t.Stop()
			return
		}
		s.mu.Lock()
		if f.closed {
			s.mu.Unlock()
			return
		}
		s.advanceLocked(s.clock.Now())
		s.mu.Unlock()
		s.deliver(false)
	}()
}

// advanceLocked makes every transition due by now, in the order they fell
// due. s.mu is held.
func (s *Server) advanceLocked(now time.Time) {
	var due []*fleetInstance
	for _, fi := range s.ec2.fleet.instances {
		if fi.next != "" && !fi.due.After(now) {
			due = append(due, fi)
		}
	}
	slices.SortFunc(due, func(a, b *fleetInstance) int {
		return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.seq, b.seq))
	})
	for _, fi := range due {
		s.enterLocked(fi, fi.next, fi.due)
	}
}

// deliver calls the OnState callbacks for the states entered so far. With
// wait, it returns only when no callback is running and none is owed
// (for API replies); without, it leaves the events to a goroutine already
// delivering (for calls that may come from a callback).
func (s *Server) deliver(wait bool) {
	f := &s.ec2.fleet
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if f.delivering {
			if !wait {
				return
			}
			f.settled.Wait()
			continue
		}
		if len(f.events) == 0 || f.closed {
			f.events = nil
			return
		}
		evs, cbs := f.events, slices.Clone(f.onState)
		f.events, f.delivering = nil, true
		s.mu.Unlock()
		func() {
			defer func() {
				s.mu.Lock()
				f.delivering = false
				f.settled.Broadcast()
			}()
			for _, e := range evs {
				for _, cb := range cbs {
					cb(e.id, e.state)
				}
			}
		}()
	}
}

// FailNext makes the next n calls of an EC2 action fail with code and msg
// and the HTTP status (0: the one EC2 uses for code), before the server
// looks at them: for throttling, 503 CodeRequestLimitExceeded "Request
// limit exceeded."; for transient errors, 500 CodeInternalError "An
// internal error has occurred." or 503 CodeUnavailable. Calls add up; n <=
// 0 forgets the failures queued for action. The failed calls are recorded
// like any other.
func (s *Server) FailNext(action string, n int, status int, code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.ec2.fleet.failNext, action)
		return
	}
	if status == 0 {
		status = ec2Status(code)
	}
	s.ec2.fleet.failNext[action] = append(s.ec2.fleet.failNext[action], &injectedFailure{n, status, code, msg})
}

// injectedFailure answers an EC2 request with the next failure queued by
// FailNext for its action, if any.
func (s *Server) injectedFailure(r *Request) (Response, bool) {
	if r.Service != "ec2" {
		return Response{}, false
	}
	s.mu.Lock()
	q := s.ec2.fleet.failNext[r.Action]
	if len(q) == 0 {
		s.mu.Unlock()
		return Response{}, false
	}
	f := *q[0]
	if q[0].left--; q[0].left == 0 {
		q = q[1:]
		s.ec2.fleet.failNext[r.Action] = q
	}
	if len(q) == 0 {
		delete(s.ec2.fleet.failNext, r.Action)
	}
	s.mu.Unlock()
	return ErrorResponse(r, f.status, f.code, f.msg), true
}

// validInstanceID tells whether id has the form of an instance id: i- and
// 8 or 17 lowercase hex digits.
func validInstanceID(id string) bool {
	hex, ok := strings.CutPrefix(id, "i-")
	if !ok || (len(hex) != 8 && len(hex) != 17) {
		return false
	}
	return strings.Trim(hex, "0123456789abcdef") == ""
}

// checkIDsLocked answers for instance ids EC2 would refuse: malformed ones
// first, then those it does not know (all of them in one message). Ids of
// the fleet are accepted whatever their form, so that tests may use short
// ones. s.mu is held.
func (s *Server) checkIDsLocked(r *Request, ids []string) (Response, bool) {
	var missing []string
	for _, id := range ids {
		if s.ec2.fleet.instances[id] != nil {
			continue
		}
		if !validInstanceID(id) {
			return ec2Error(r, ec2Failure{CodeInstanceMalformed, fmt.Sprintf("Invalid id: %q", id)}), false
		}
		missing = append(missing, id)
	}
	switch len(missing) {
	case 0:
		return Response{}, true
	case 1:
		return ec2Error(r, ec2Failure{CodeInstanceNotFound, fmt.Sprintf("The instance ID '%s' does not exist", missing[0])}), false
	}
	return ec2Error(r, ec2Failure{CodeInstanceNotFound, fmt.Sprintf("The instance IDs '%s' do not exist", strings.Join(missing, ", "))}), false
}

// describeInstances is EC2 DescribeInstances. Parameters: InstanceId.N,
// Filter.N.Name with Filter.N.Value.M, MaxResults (5-1000, not with
// InstanceId), NextToken, DryRun.
func (s *Server) describeInstances(r *Request) Response {
	ids := indexedParams(r, "InstanceId")
	if len(ids) > 0 && r.Params.Has("MaxResults") {
		return ec2Error(r, ec2Failure{CodeInvalidParameterCombination, "The parameter instancesSet cannot be used with the parameter maxResults"})
	}
	limit, f := maxResults(r, InstancesMinResults, InstancesMaxResults)
	if f != nil {
		return ec2Error(r, *f)
	}
	var after uint64
	if tok := r.Params.Get("NextToken"); tok != "" {
		seq, ok := parseSeqToken(tok, "instances")
		if !ok {
			return ec2Error(r, ec2Failure{CodeInvalidPaginationToken, "The specified pagination token is not valid or is expired."})
		}
		after = seq
		if limit == 0 {
			limit = InstancesMaxResults
		}
	}
	filters, err := instanceFilters(r)
	if err != nil {
		return ec2Error(r, ec2Failure{CodeInvalidParameterValue, err.Error()})
	}
	dryRun, err := boolParam(r, "DryRun")
	if err != nil {
		return ec2Error(r, ec2Failure{CodeInvalidParameterValue, err.Error()})
	}

	s.mu.Lock()
	s.advanceLocked(s.clock.Now())
	resp := func() Response {
		if resp, ok := s.checkIDsLocked(r, ids); !ok {
			return resp
		}
		if f := s.ec2.failure; f != nil {
			return ec2Error(r, *f)
		}
		if dryRun {
			return dryRunError(r)
		}
		var list []*fleetInstance
		for _, fi := range s.ec2.fleet.instances {
			if fi.seq > after && (len(ids) == 0 || slices.Contains(ids, fi.ID)) && filters.match(fi) {
				list = append(list, fi)
			}
		}
		slices.SortFunc(list, func(a, b *fleetInstance) int { return cmp.Compare(a.seq, b.seq) })
		more := limit > 0 && len(list) > limit
		if more {
			list = list[:limit]
		}
		var b strings.Builder
		b.WriteString("<reservationSet>")
		for _, fi := range list {
			s.writeReservation(&b, fi)
		}
		b.WriteString("</reservationSet>")
		if more {
			b.WriteString("<nextToken>" + xmlText(seqToken("instances", list[len(list)-1].seq)) + "</nextToken>")
		}
		return QueryResponse(r, EC2Namespace, b.String())
	}()
	s.mu.Unlock()
	s.deliver(true)
	return resp
}

func dryRunError(r *Request) Response {
	return ec2Error(r, ec2Failure{"DryRunOperation", "Request would have succeeded, but DryRun flag is set."})
}

// writeReservation writes one reservation holding fi (each instance is
// launched on its own here).
func (s *Server) writeReservation(b *strings.Builder, fi *fleetInstance) {
	el := func(name, v string) {
		if v != "" {
			fmt.Fprintf(b, "<%s>%s</%s>", name, xmlText(v), name)
		}
	}
	fmt.Fprintf(b, "<item><reservationId>r-0%016x</reservationId><ownerId>%s</ownerId><groupSet/><instancesSet><item>",
		fi.seq, xmlText(s.AccountID))
	el("instanceId", fi.ID)
	el("imageId", "ami-0123456789abcdef0")
	fmt.Fprintf(b, "<instanceState><code>%d</code><name>%s</name></instanceState>", stateCodes[fi.State], fi.State)
	fmt.Fprintf(b, "<reason>%s</reason>", xmlText(fi.reason))
	b.WriteString("<amiLaunchIndex>0</amiLaunchIndex>")
	el("instanceType", fi.Type)
	el("launchTime", fi.LaunchTime.UTC().Format("2006-01-02T15:04:05.000Z"))
	fmt.Fprintf(b, "<placement><availabilityZone>%sa</availabilityZone><groupName/><tenancy>default</tenancy></placement>", xmlText(s.Region))
	el("privateIpAddress", fi.PrivateIP)
	el("ipAddress", fi.PublicIP)
	el("ipv6Address", fi.IPv6)
	if fi.stateReason != "" {
		fmt.Fprintf(b, "<stateReason><code>%s</code><message>%s</message></stateReason>", xmlText(fi.stateReason), xmlText(fi.stateMsg))
	}
	b.WriteString("<architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>")
	if len(fi.Tags) > 0 {
		b.WriteString("<tagSet>")
		keys := slices.Sorted(maps.Keys(fi.Tags))
		for _, k := range keys {
			fmt.Fprintf(b, "<item><key>%s</key><value>%s</value></item>", xmlText(k), xmlText(fi.Tags[k]))
		}
		b.WriteString("</tagSet>")
	}
	b.WriteString("<virtualizationType>hvm</virtualizationType><hypervisor>xen</hypervisor>")
	b.WriteString("</item></instancesSet></item>")
}

// instanceFilter is one Filter.N: an instance matches if any value
// matches (with EC2's * and ? wildcards); filters are ANDed.
type instanceFilter struct {
	name   string
	values []string
}

type filterSet []instanceFilter

// instanceFilterNames are the DescribeInstances filters the fake knows,
// besides tag:KEY.
var instanceFilterNames = map[string]func(fi *fleetInstance) []string{
	"instance-id":         func(fi *fleetInstance) []string { return []string{fi.ID} },
	"instance-state-name": func(fi *fleetInstance) []string { return []string{fi.State} },
	"instance-state-code": func(fi *fleetInstance) []string { return []string{strconv.Itoa(stateCodes[fi.State])} },
	"instance-type":       func(fi *fleetInstance) []string { return []string{fi.Type} },
	"ip-address":          func(fi *fleetInstance) []string { return nonEmpty(fi.PublicIP) },
	"private-ip-address":  func(fi *fleetInstance) []string { return nonEmpty(fi.PrivateIP) },
	"ipv6-address":        func(fi *fleetInstance) []string { return nonEmpty(fi.IPv6) },
	"tag-key":             func(fi *fleetInstance) []string { return slices.Collect(maps.Keys(fi.Tags)) },
	"tag-value":           func(fi *fleetInstance) []string { return slices.Collect(maps.Values(fi.Tags)) },
}

// nonEmpty is the values of an address filter: none for no address.
func nonEmpty(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

func instanceFilters(r *Request) (filterSet, error) {
	var fs filterSet
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		name := r.Params.Get(p + ".Name")
		if name == "" {
			if r.Params.Has(p + ".Value.1") {
				return nil, fmt.Errorf("The filter 'null' is invalid")
			}
			return fs, nil
		}
		if _, ok := instanceFilterNames[name]; !ok && !strings.HasPrefix(name, "tag:") {
			return nil, fmt.Errorf("The filter '%s' is invalid", name)
		}
		fs = append(fs, instanceFilter{name, indexedParams(r, p+".Value")})
	}
}

func (fs filterSet) match(fi *fleetInstance) bool {
	for _, f := range fs {
		var have []string
		if key, ok := strings.CutPrefix(f.name, "tag:"); ok {
			if v, ok := fi.Tags[key]; ok {
				have = []string{v}
			}
		} else {
			have = instanceFilterNames[f.name](fi)
		}
		if !slices.ContainsFunc(f.values, func(pat string) bool {
			return slices.ContainsFunc(have, func(v string) bool { return wildcardMatch(pat, v) })
		}) {
			return false
		}
	}
	return true
}

// wildcardMatch matches s against an EC2 filter value: * is any run of
// characters, ? any one, and a backslash makes the next character
// literal.
func wildcardMatch(pat, s string) bool {
	// Iterative glob matching with one backtrack point for the last *.
	var p, i, starP, starI = 0, 0, -1, 0
	pr, sr := []rune(pat), []rune(s)
	for i < len(sr) {
		if p < len(pr) {
			switch c := pr[p]; {
			case c == '*':
				starP, starI = p, i
				p++
				continue
			case c == '?':
				p++
				i++
				continue
			case c == '\\' && p+1 < len(pr):
				if pr[p+1] == sr[i] {
					p += 2
					i++
					continue
				}
			case c == sr[i]:
				p++
				i++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP+1, starI
	}
	for p < len(pr) && pr[p] == '*' {
		p++
	}
	return p == len(pr)
}

// startInstances is EC2 StartInstances. Parameters: InstanceId.N,
// AdditionalInfo (ignored), DryRun. A stopped instance goes to pending
// (running after Transitions.Pending) with a new public address; pending
// and running ones are left as they are; the call fails as a whole with
// IncorrectInstanceState if any instance is stopping, shutting down or
// terminated.
func (s *Server) startInstances(r *Request) Response {
	return s.instanceCall(r, "InstanceId", func(ids []string, dryRun bool, now time.Time) Response {
		return s.changeStatesLocked(r, ids, dryRun, stateChange{
			verb:   "started",
			refuse: []string{InstanceStopping, InstanceShuttingDown, InstanceTerminated},
			from:   InstanceStopped, to: InstancePending, now: now,
		})
	})
}

// instanceCall is the common part of the fleet's actions. It reads the
// ids (idParam.N, at least one) and DryRun; then, under the lock, it makes
// the transitions that are due, refuses ids EC2 would refuse, answers
// SetEC2Failure, and calls act, which answers DryRun after its own checks.
// The OnState callbacks for what act changed have run when it returns.
func (s *Server) instanceCall(r *Request, idParam string, act func(ids []string, dryRun bool, now time.Time) Response) Response {
	ids := indexedParams(r, idParam)
	if len(ids) == 0 {
		return ec2Error(r, ec2Failure{CodeMissingParameter, "The request must contain the parameter " + idParam})
	}
	dryRun, err := boolParam(r, "DryRun")
	if err != nil {
		return ec2Error(r, ec2Failure{CodeInvalidParameterValue, err.Error()})
	}
	now := s.clock.Now()
	s.mu.Lock()
	s.advanceLocked(now)
	check := s.checkIDsLocked
	if idParam == "ResourceId" {
		check = s.checkResourcesLocked
	}
	resp, ok := check(r, ids)
	switch f := s.ec2.failure; {
	case !ok:
	case f != nil:
		resp = ec2Error(r, *f)
	default:
		resp = act(ids, dryRun, now)
	}
	s.mu.Unlock()
	s.deliver(true)
	return resp
}

// stateChange is what StartInstances and StopInstances do: move the
// instances in state from to state to, leave the others as they are, and
// refuse the whole call if any instance is in a state of refuse.
type stateChange struct {
	verb     string // "started": the instance "is not in a state from which it can be started"
	refuse   []string
	from, to string
	now      time.Time
	// enter, if set, is called for each instance before it moves.
	enter func(fi *fleetInstance)
}

// changeStatesLocked makes a stateChange and answers with the
// instancesSet of previous and current states. s.mu is held.
func (s *Server) changeStatesLocked(r *Request, ids []string, dryRun bool, c stateChange) Response {
	for _, id := range ids {
		if slices.Contains(c.refuse, s.ec2.fleet.instances[id].State) {
			return ec2Error(r, ec2Failure{CodeIncorrectInstanceState,
				fmt.Sprintf("The instance '%s' is not in a state from which it can be %s.", id, c.verb)})
		}
	}
	if dryRun {
		return dryRunError(r)
	}
	var items strings.Builder
	for _, id := range ids {
		fi := s.ec2.fleet.instances[id]
		prev, cur := fi.State, fi.State
		if prev == c.from {
			cur = c.to
			if c.enter != nil {
				c.enter(fi)
			}
			s.enterLocked(fi, c.to, c.now)
		}
		writeStateChange(&items, id, cur, prev)
	}
	return QueryResponse(r, EC2Namespace, "<instancesSet>"+items.String()+"</instancesSet>")
}

func writeStateChange(b *strings.Builder, id, cur, prev string) {
	fmt.Fprintf(b, `<item><instanceId>%s</instanceId>`+
		`<currentState><code>%d</code><name>%s</name></currentState>`+
		`<previousState><code>%d</code><name>%s</name></previousState></item>`,
		xmlText(id), stateCodes[cur], cur, stateCodes[prev], prev)
}

// Tag limits of EC2.
const (
	maxTagsPerResource = 50
	maxTagKeyLen       = 128
	maxTagValueLen     = 256
)

type tagParam struct {
	key, value string
	hasValue   bool
}

// tagParams reads Tag.N.Key and Tag.N.Value.
func tagParams(r *Request) []tagParam {
	var out []tagParam
	for i := 1; ; i++ {
		p := "Tag." + strconv.Itoa(i)
		if !r.Params.Has(p+".Key") && !r.Params.Has(p+".Value") {
			return out
		}
		out = append(out, tagParam{r.Params.Get(p + ".Key"), r.Params.Get(p + ".Value"), r.Params.Has(p + ".Value")})
	}
}

// checkResourcesLocked answers for resource ids that are not instances of
// the fleet; s.mu is held.
func (s *Server) checkResourcesLocked(r *Request, ids []string) (Response, bool) {
	for _, id := range ids {
		if s.ec2.fleet.instances[id] == nil && !strings.HasPrefix(id, "i-") {
			return ec2Error(r, ec2Failure{"InvalidID", fmt.Sprintf("The ID '%s' is not valid", id)}), false
		}
	}
	return s.checkIDsLocked(r, ids)
}

// createTags is EC2 CreateTags for instances of the fleet. Parameters:
// ResourceId.N, Tag.N.Key, Tag.N.Value, DryRun.
func (s *Server) createTags(r *Request) Response {
	tags := tagParams(r)
	if len(tags) == 0 {
		return ec2Error(r, ec2Failure{CodeMissingParameter, "The request must contain the parameter Tag"})
	}
	for _, t := range tags {
		switch {
		case t.key == "" || len(t.key) > maxTagKeyLen:
			return ec2Error(r, ec2Failure{CodeInvalidParameterValue, fmt.Sprintf("Value ( %s ) for parameter key is invalid. Tag keys must be between 1 and %d characters", t.key, maxTagKeyLen)})
		case strings.HasPrefix(strings.ToLower(t.key), "aws:"):
			return ec2Error(r, ec2Failure{CodeInvalidParameterValue, fmt.Sprintf("Value ( %s ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use", t.key)})
		case len(t.value) > maxTagValueLen:
			return ec2Error(r, ec2Failure{CodeInvalidParameterValue, fmt.Sprintf("Value ( %s ) for parameter value is invalid. Tag values must be less than %d characters", t.value, maxTagValueLen)})
		}
	}
	return s.instanceCall(r, "ResourceId", func(ids []string, dryRun bool, _ time.Time) Response {
		for _, id := range ids {
			fi := s.ec2.fleet.instances[id]
			n := len(fi.Tags)
			for _, t := range tags {
				if _, ok := fi.Tags[t.key]; !ok {
					n++
				}
			}
			if n > maxTagsPerResource {
				return ec2Error(r, ec2Failure{"TagLimitExceeded", "The maximum number of Tags for a resource has been reached."})
			}
		}
		if dryRun {
			return dryRunError(r)
		}
		for _, id := range ids {
			for _, t := range tags {
				s.ec2.fleet.instances[id].Tags[t.key] = t.value
			}
		}
		return QueryResponse(r, EC2Namespace, "<return>true</return>")
	})
}

// deleteTags is EC2 DeleteTags for instances of the fleet. Parameters:
// ResourceId.N, Tag.N.Key with an optional Tag.N.Value (then the tag goes
// only if it has that value, "" included), DryRun; without tags every tag
// goes.
func (s *Server) deleteTags(r *Request) Response {
	tags := tagParams(r)
	return s.instanceCall(r, "ResourceId", func(ids []string, dryRun bool, _ time.Time) Response {
		if dryRun {
			return dryRunError(r)
		}
		for _, id := range ids {
			fi := s.ec2.fleet.instances[id]
			if len(tags) == 0 {
				clear(fi.Tags)
			}
			for _, t := range tags {
				if v, ok := fi.Tags[t.key]; ok && (!t.hasValue || v == t.value) {
					delete(fi.Tags, t.key)
				}
			}
		}
		return QueryResponse(r, EC2Namespace, "<return>true</return>")
	})
}

// ownLocked is the record of the server's own instance; s.mu is held.
func (s *Server) ownLocked() *fleetInstance { return s.ec2.fleet.instances[s.InstanceID] }
