package awstest_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

var ignoreTag = cmpopts.IgnoreUnexported(types.Tag{})

var fleetStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newFleet is newEC2 at fleetStart.
func newFleet(t *testing.T, opts ...func(*ec2.Options)) (*awstest.Server, *clock.Fake, *ec2.Client) {
	t.Helper()
	return newEC2(t, fleetStart, opts...)
}

// noBackoff makes the SDK's standard retryer retry at once instead of
// sleeping between attempts.
func noBackoff(o *ec2.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
	})
}

// recordStates returns a channel that gets "id state" for every state an
// instance enters.
func recordStates(s *awstest.Server) <-chan string {
	ch := make(chan string, 100)
	s.OnState(func(id, state string) { ch <- id + " " + state })
	return ch
}

// nextState waits (at most 10 s of real time, for the server's timer
// goroutine) for the next recorded state.
func nextState(t *testing.T, ch <-chan string) string {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case e := <-ch:
		return e
	case <-timeout.C:
		t.Fatal("no state change within 10 s")
		return ""
	}
}

// noState checks that no state change was recorded.
func noState(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case e := <-ch:
		t.Errorf("unexpected state change %q", e)
	default:
	}
}

func describe(t *testing.T, c *ec2.Client, in *ec2.DescribeInstancesInput) []types.Instance {
	t.Helper()
	var out []types.Instance
	for _, page := range allPages(t, "DescribeInstances", ec2.NewDescribeInstancesPaginator(c, in)) {
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
	}
	return out
}

func ids(insts []types.Instance) []string {
	out := []string{}
	for _, in := range insts {
		out = append(out, aws.ToString(in.InstanceId))
	}
	return out
}

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

func apiError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != code || (msg != "" && api.ErrorMessage() != msg) {
		t.Errorf("error = %v, want %s: %s", err, code, msg)
	}
}

func TestDescribeInstances(t *testing.T) {
	s, fc, client := newFleet(t)
	web := s.AddInstance(awstest.Instance{ID: "i-0aaaaaaaaaaaaaaa1", Type: "t3.small", State: awstest.InstanceStopped,
		Tags: map[string]string{"Name": "web", "team": "blue"}})
	db := s.AddInstance(awstest.Instance{ID: "i-0aaaaaaaaaaaaaaa2", PublicIP: "203.0.113.9", PrivateIP: "172.31.5.5",
		IPv6: "2001:db8::5", Tags: map[string]string{"Name": "db"}})
	fc.Advance(time.Minute)

	got := describe(t, client, &ec2.DescribeInstancesInput{InstanceIds: []string{web, db}})
	if len(got) != 2 {
		t.Fatalf("got %d instances, want 2", len(got))
	}
	w, d := got[0], got[1]
	if aws.ToString(w.InstanceId) != web || w.InstanceType != "t3.small" || w.State.Name != types.InstanceStateNameStopped ||
		aws.ToInt32(w.State.Code) != 80 || w.PublicIpAddress != nil || aws.ToString(w.PrivateIpAddress) == "" ||
		aws.ToString(w.Placement.AvailabilityZone) != s.Region+"a" || !aws.ToTime(w.LaunchTime).Equal(fleetStart) ||
		w.StateReason == nil || aws.ToString(w.StateReason.Code) != "Client.UserInitiatedShutdown" ||
		aws.ToString(w.StateTransitionReason) != "User initiated (2026-03-01 12:00:00 GMT)" {
		t.Errorf("stopped instance = id %s type %s state %s/%d public %v private %v az %v launch %v reason %v %q",
			aws.ToString(w.InstanceId), w.InstanceType, w.State.Name, aws.ToInt32(w.State.Code), w.PublicIpAddress,
			aws.ToString(w.PrivateIpAddress), aws.ToString(w.Placement.AvailabilityZone), w.LaunchTime, w.StateReason,
			aws.ToString(w.StateTransitionReason))
	}
	wantTags := []types.Tag{{Key: aws.String("Name"), Value: aws.String("web")}, {Key: aws.String("team"), Value: aws.String("blue")}}
	if diff := cmp.Diff(wantTags, w.Tags, ignoreTag); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if d.State.Name != types.InstanceStateNameRunning || aws.ToInt32(d.State.Code) != 16 ||
		aws.ToString(d.PublicIpAddress) != "203.0.113.9" || aws.ToString(d.PrivateIpAddress) != "172.31.5.5" ||
		aws.ToString(d.Ipv6Address) != "2001:db8::5" || d.StateReason != nil || aws.ToString(d.StateTransitionReason) != "" {
		t.Errorf("running instance = state %s public %v private %v ipv6 %v reason %v",
			d.State.Name, aws.ToString(d.PublicIpAddress), aws.ToString(d.PrivateIpAddress), aws.ToString(d.Ipv6Address), d.StateReason)
	}

	tests := []struct {
		name    string
		filters []types.Filter
		want    []string
	}{
		{"all", nil, []string{s.InstanceID, web, db}},
		{"tag:Name", []types.Filter{filter("tag:Name", "db")}, []string{db}},
		{"tag:Name wildcard", []types.Filter{filter("tag:Name", "w*", "x?")}, []string{web}},
		{"tag:Name none", []types.Filter{filter("tag:Name", "Web")}, []string{}},
		{"tag-key", []types.Filter{filter("tag-key", "team")}, []string{web}},
		{"tag-value", []types.Filter{filter("tag-value", "blue", "db")}, []string{web, db}},
		{"instance-state-name", []types.Filter{filter("instance-state-name", "stopped", "stopping")}, []string{web}},
		{"instance-state-code", []types.Filter{filter("instance-state-code", "16")}, []string{s.InstanceID, db}},
		{"instance-id", []types.Filter{filter("instance-id", db, "i-0ffffffffffffffff")}, []string{db}},
		{"anded", []types.Filter{filter("instance-state-name", "running"), filter("tag-key", "Name")}, []string{db}},
		{"ip-address", []types.Filter{filter("ip-address", "*")}, []string{s.InstanceID, db}},
		{"instance-type", []types.Filter{filter("instance-type", "t3.small")}, []string{web}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ids(describe(t, client, &ec2.DescribeInstancesInput{Filters: tt.filters}))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}

	_, err := client.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{Filters: []types.Filter{filter("flavour", "x")}})
	apiError(t, err, "InvalidParameterValue", "The filter 'flavour' is invalid")
	_, err = client.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{DryRun: aws.Bool(true)})
	apiError(t, err, "DryRunOperation", "")

	// The server's own instance is a member of the fleet.
	own, ok := s.Instance(s.InstanceID)
	if !ok || own.State != awstest.InstanceRunning || own.Type != awstest.DefaultInstanceType || own.PublicIP == "" || own.PrivateIP == "" {
		t.Errorf("own instance = %+v, %v", own, ok)
	}
}

func TestDescribeInstancesPagination(t *testing.T) {
	s, _, client := newFleet(t)
	want := []string{s.InstanceID}
	for range 11 {
		want = append(want, s.AddInstance(awstest.Instance{Tags: map[string]string{"fleet": "yes"}}))
	}
	got := ids(describe(t, client, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)}))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	checkPages(t, s, "DescribeInstances", 3, "5")

	// Filters apply before paging; an instance added between pages lands
	// on a later page, and none is repeated or skipped.
	p := ec2.NewDescribeInstancesPaginator(client, &ec2.DescribeInstancesInput{
		MaxResults: aws.Int32(10), Filters: []types.Filter{filter("tag:fleet", "yes")}})
	first, err := p.NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	extra := s.AddInstance(awstest.Instance{Tags: map[string]string{"fleet": "yes"}})
	second, err := p.NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Reservations) != 10 || len(second.Reservations) != 2 || p.HasMorePages() ||
		aws.ToString(second.Reservations[1].Instances[0].InstanceId) != extra {
		t.Errorf("pages of %d and %d, more %v", len(first.Reservations), len(second.Reservations), p.HasMorePages())
	}

	call := func(in ec2.DescribeInstancesInput) error {
		_, err := client.DescribeInstances(t.Context(), &in)
		return err
	}
	apiError(t, call(ec2.DescribeInstancesInput{InstanceIds: []string{s.InstanceID}, MaxResults: aws.Int32(5)}),
		"InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	apiError(t, call(ec2.DescribeInstancesInput{MaxResults: aws.Int32(4)}),
		"InvalidParameterValue", "Value ( 4 ) for parameter maxResults is invalid. Expecting a value greater than 5.")
	apiError(t, call(ec2.DescribeInstancesInput{MaxResults: aws.Int32(1001)}), "InvalidParameterValue", "")
	apiError(t, call(ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), NextToken: aws.String("bm9wZQ")}),
		awstest.CodeInvalidPaginationToken, "")
	for _, n := range []int32{5, 1000} {
		if err := call(ec2.DescribeInstancesInput{MaxResults: aws.Int32(n)}); err != nil {
			t.Errorf("MaxResults %d: %v", n, err)
		}
	}
}

func TestInstanceIDErrors(t *testing.T) {
	s, _, client := newFleet(t)
	const missing, missing2 = "i-0000000000000000f", "i-0000000e"
	describeErr := func(ids ...string) error {
		_, err := client.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: ids})
		return err
	}
	apiError(t, describeErr(s.InstanceID, missing), awstest.CodeInstanceNotFound, "The instance ID '"+missing+"' does not exist")
	apiError(t, describeErr(missing, missing2), awstest.CodeInstanceNotFound,
		"The instance IDs '"+missing+", "+missing2+"' do not exist")
	apiError(t, describeErr("devbox"), awstest.CodeInstanceMalformed, `Invalid id: "devbox"`)
	apiError(t, describeErr("i-0123"), awstest.CodeInstanceMalformed, `Invalid id: "i-0123"`)
	_, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{missing}})
	apiError(t, err, awstest.CodeInstanceNotFound, "")
	for _, r := range s.Calls("ec2", "DescribeInstances") {
		if r.Status != http.StatusBadRequest {
			t.Errorf("%s answered %d, want 400", r.ErrorCode, r.Status)
		}
	}
}

func TestStartInstances(t *testing.T) {
	s, fc, client := newFleet(t)
	s.SetTransitions(awstest.Transitions{Pending: 10 * time.Second, Stopping: 20 * time.Second})
	id := s.AddInstance(awstest.Instance{Tags: map[string]string{"Name": "devbox"}})
	before, _ := s.Instance(id)
	states := recordStates(s)

	stop, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if c := stop.StoppingInstances[0]; c.PreviousState.Name != "running" || c.CurrentState.Name != "stopping" {
		t.Errorf("stop: %s -> %s", c.PreviousState.Name, c.CurrentState.Name)
	}
	if e := nextState(t, states); e != id+" stopping" {
		t.Errorf("state change %q, want stopping", e)
	}
	fc.Advance(20 * time.Second)
	// The timer moves the instance on its own; nobody asks.
	if e := nextState(t, states); e != id+" stopped" {
		t.Errorf("state change %q, want stopped", e)
	}
	stopped := describe(t, client, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})[0]
	if stopped.State.Name != "stopped" || stopped.PublicIpAddress != nil || aws.ToString(stopped.PrivateIpAddress) != before.PrivateIP {
		t.Errorf("stopped: state %s public %v private %v", stopped.State.Name, stopped.PublicIpAddress, aws.ToString(stopped.PrivateIpAddress))
	}

	fc.Advance(time.Hour)
	start, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	c := start.StartingInstances[0]
	if aws.ToString(c.InstanceId) != id || c.PreviousState.Name != "stopped" || aws.ToInt32(c.PreviousState.Code) != 80 ||
		c.CurrentState.Name != "pending" || aws.ToInt32(c.CurrentState.Code) != 0 {
		t.Errorf("start: %s %s -> %s", aws.ToString(c.InstanceId), c.PreviousState.Name, c.CurrentState.Name)
	}
	if e := nextState(t, states); e != id+" pending" {
		t.Errorf("state change %q, want pending", e)
	}
	fc.Advance(10*time.Second - time.Millisecond)
	if got := describe(t, client, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})[0]; got.State.Name != "pending" {
		t.Errorf("just before Pending has passed: %s", got.State.Name)
	}
	noState(t, states)
	fc.Advance(time.Millisecond)
	if e := nextState(t, states); e != id+" running" {
		t.Errorf("state change %q, want running", e)
	}
	after, _ := s.Instance(id)
	if after.State != awstest.InstanceRunning || after.PublicIP == "" || after.PublicIP == before.PublicIP ||
		after.PrivateIP != before.PrivateIP || !after.LaunchTime.Equal(fleetStart.Add(time.Hour+20*time.Second)) {
		t.Errorf("after a stop and start: %+v; before: %+v (want a new public address, the same private one)", after, before)
	}
	running := describe(t, client, &ec2.DescribeInstancesInput{Filters: []types.Filter{filter("tag:Name", "devbox")}})[0]
	if running.State.Name != "running" || aws.ToString(running.PublicIpAddress) != after.PublicIP || running.StateReason != nil {
		t.Errorf("running: state %s public %v reason %v", running.State.Name, aws.ToString(running.PublicIpAddress), running.StateReason)
	}

	// Starting a running instance changes nothing and reports it.
	start, err = client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if c := start.StartingInstances[0]; c.PreviousState.Name != "running" || c.CurrentState.Name != "running" {
		t.Errorf("start of a running instance: %s -> %s", c.PreviousState.Name, c.CurrentState.Name)
	}
	noState(t, states)
	if n := len(s.Calls("ec2", "StartInstances")); n != 2 {
		t.Errorf("%d StartInstances recorded, want 2", n)
	}
}

func TestStartHibernatedInstance(t *testing.T) {
	s, fc, client := newFleet(t)
	states := recordStates(s)
	if _, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}, Hibernate: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	fc.Advance(awstest.DefaultTransitions.Stopping)
	for _, want := range []string{"stopping", "stopped"} {
		if e := nextState(t, states); e != s.InstanceID+" "+want {
			t.Errorf("state change %q, want %s", e, want)
		}
	}
	if state, hib := s.InstanceState(); state != "stopped" || !hib {
		t.Errorf("InstanceState = %s, %v; want stopped, hibernated", state, hib)
	}
	got := describe(t, client, &ec2.DescribeInstancesInput{InstanceIds: []string{s.InstanceID}})[0]
	if got.StateReason == nil || aws.ToString(got.StateReason.Code) != "Client.UserInitiatedHibernate" {
		t.Errorf("state reason = %v", got.StateReason)
	}
	if _, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{s.InstanceID}}); err != nil {
		t.Fatal(err)
	}
	fc.Advance(awstest.DefaultTransitions.Pending)
	for _, want := range []string{"pending", "running"} {
		if e := nextState(t, states); e != s.InstanceID+" "+want {
			t.Errorf("state change %q, want %s", e, want)
		}
	}
}

func TestIncorrectInstanceState(t *testing.T) {
	s, fc, client := newFleet(t)
	states := recordStates(s)
	id := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped})
	gone := s.AddInstance(awstest.Instance{State: awstest.InstanceTerminated})
	start := func(ids ...string) error {
		_, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: ids})
		return err
	}

	s.SetState(id, awstest.InstanceStopping)
	if e := nextState(t, states); e != id+" stopping" {
		t.Errorf("state change %q, want stopping", e)
	}
	apiError(t, start(id), awstest.CodeIncorrectInstanceState, "The instance '"+id+"' is not in a state from which it can be started.")
	apiError(t, start(gone), awstest.CodeIncorrectInstanceState, "")
	// One instance in the wrong state fails the whole call.
	apiError(t, start(s.InstanceID, id), awstest.CodeIncorrectInstanceState, "")
	fc.Advance(awstest.DefaultTransitions.Stopping)
	if e := nextState(t, states); e != id+" stopped" {
		t.Errorf("state change %q, want stopped", e)
	}
	if err := start(id); err != nil {
		t.Fatalf("start once stopped: %v", err)
	}
	if e := nextState(t, states); e != id+" pending" {
		t.Errorf("state change %q, want pending", e)
	}
	_, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{id}})
	apiError(t, err, awstest.CodeIncorrectInstanceState, "The instance '"+id+"' is not in a state from which it can be stopped.")
	if r := s.Calls("ec2", "StopInstances"); r[len(r)-1].Status != http.StatusBadRequest {
		t.Errorf("IncorrectInstanceState answered %d, want 400", r[len(r)-1].Status)
	}
	_, err = client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}, DryRun: aws.Bool(true)})
	apiError(t, err, "DryRunOperation", "")
	noState(t, states)
}

// TestImmediateTransitions: with zero Transitions the reply still shows the
// intermediate state, the instance is already past it, and the callbacks
// for both states have run when the SDK returns.
func TestImmediateTransitions(t *testing.T) {
	s, _, client := newFleet(t)
	s.SetTransitions(awstest.Transitions{})
	states := recordStates(s)
	id := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped})
	out, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if c := out.StartingInstances[0]; c.CurrentState.Name != "pending" {
		t.Errorf("reply says %s, want pending", c.CurrentState.Name)
	}
	for _, want := range []string{"pending", "running"} {
		select {
		case e := <-states:
			if e != id+" "+want {
				t.Errorf("state change %q, want %s", e, want)
			}
		default:
			t.Fatalf("callback for %s had not run when StartInstances returned", want)
		}
	}
	// The SDK's waiter reads the reply as running at its first look.
	w := ec2.NewInstanceRunningWaiter(client)
	if err := w.Wait(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Minute); err != nil {
		t.Errorf("InstanceRunningWaiter: %v", err)
	}
	if n := len(s.Calls("ec2", "DescribeInstances")); n != 1 {
		t.Errorf("waiter made %d DescribeInstances, want 1", n)
	}
}

// TestRunningOnlyAfterCallback: a service a test starts in its OnState
// callback (here a loopback listener standing in for sshd) is up by the
// time DescribeInstances says running.
func TestRunningOnlyAfterCallback(t *testing.T) {
	s, fc, client := newFleet(t)
	s.SetAddresser(func(string) (string, string, string) { return "127.0.0.1", "", "" })
	id := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped})
	listeners := make(chan net.Listener, 1)
	s.OnState(func(got, state string) {
		if got != id || state != awstest.InstanceRunning {
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		listeners <- ln
	})
	if _, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	fc.Advance(awstest.DefaultTransitions.Pending)
	got := describe(t, client, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})[0]
	if got.State.Name != "running" || aws.ToString(got.PublicIpAddress) != "127.0.0.1" {
		t.Fatalf("state %s, address %v", got.State.Name, aws.ToString(got.PublicIpAddress))
	}
	select {
	case ln := <-listeners:
		defer ln.Close()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial the service: %v", err)
		}
		_ = conn.Close()
	default:
		t.Fatal("DescribeInstances said running before the callback had started the service")
	}
}

func TestAddresses(t *testing.T) {
	s, _, client := newFleet(t)
	s.SetTransitions(awstest.Transitions{})
	n := 0
	s.SetAddresser(func(id string) (string, string, string) {
		n++
		return fmt.Sprintf("10.200.%d.2", n), "", ""
	})
	id := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped, PrivateIP: "172.31.9.9", IPv6: "2001:db8::9"})
	eip := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped, PublicIP: "192.0.2.77", ElasticIP: true})
	cycle := func(id string) awstest.Instance {
		t.Helper()
		if _, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Fatal(err)
		}
		in, _ := s.Instance(id)
		if _, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Fatal(err)
		}
		return in
	}
	first, second := cycle(id), cycle(id)
	if first.PublicIP != "10.200.2.2" || second.PublicIP != "10.200.3.2" || first.PrivateIP != "172.31.9.9" ||
		second.IPv6 != "2001:db8::9" {
		t.Errorf("two starts: %+v, %+v", first, second)
	}
	if in, _ := s.Instance(id); in.PublicIP != "" || in.State != awstest.InstanceStopped {
		t.Errorf("stopped again: %+v", in)
	}
	for range 2 {
		if in := cycle(eip); in.PublicIP != "192.0.2.77" {
			t.Errorf("Elastic IP instance started with %s", in.PublicIP)
		}
	}
	if in, _ := s.Instance(eip); in.PublicIP != "192.0.2.77" {
		t.Errorf("stopped Elastic IP instance: %+v", in)
	}
}

func TestFailNextRetriedBySDK(t *testing.T) {
	s, _, client := newFleet(t, noBackoff)
	for _, tt := range []struct {
		status    int
		code, msg string
	}{
		{http.StatusServiceUnavailable, awstest.CodeRequestLimitExceeded, "Request limit exceeded."},
		{http.StatusInternalServerError, awstest.CodeInternalError, "An internal error has occurred."},
		{http.StatusServiceUnavailable, awstest.CodeUnavailable, "The server is overloaded and can't handle the request."},
	} {
		t.Run(tt.code, func(t *testing.T) {
			n := len(s.Requests())
			s.FailNext("DescribeInstances", 2, tt.status, tt.code, tt.msg)
			if _, err := client.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{}); err != nil {
				t.Fatalf("DescribeInstances after 2 failures: %v", err)
			}
			var got []string
			for _, r := range s.Requests()[n:] {
				got = append(got, fmt.Sprintf("%s %d %s", r.Action, r.Status, r.ErrorCode))
			}
			fail := fmt.Sprintf("DescribeInstances %d %s", tt.status, tt.code)
			if diff := cmp.Diff([]string{fail, fail, "DescribeInstances 200 "}, got); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}

	// Without retries the failure reaches the caller; other actions and
	// later calls are untouched.
	once := ec2.NewFromConfig(loadConfig(t), func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	s.FailNext("StartInstances", 1, 0, awstest.CodeRequestLimitExceeded, "Request limit exceeded.")
	if _, err := once.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("DescribeInstances: %v", err)
	}
	start := &ec2.StartInstancesInput{InstanceIds: []string{s.InstanceID}}
	_, err := once.StartInstances(t.Context(), start)
	apiError(t, err, awstest.CodeRequestLimitExceeded, "Request limit exceeded.")
	if r := s.Calls("ec2", "StartInstances"); r[0].Status != http.StatusServiceUnavailable {
		t.Errorf("throttling answered %d, want 503", r[0].Status)
	}
	if _, err := once.StartInstances(t.Context(), start); err != nil {
		t.Errorf("StartInstances after the failure: %v", err)
	}
	// Queued failures come in turn.
	s.FailNext("StartInstances", 1, 0, awstest.CodeInternalError, "An internal error has occurred.")
	s.FailNext("StartInstances", 1, 0, awstest.CodeRequestLimitExceeded, "Request limit exceeded.")
	_, err = once.StartInstances(t.Context(), start)
	apiError(t, err, awstest.CodeInternalError, "")
	_, err = once.StartInstances(t.Context(), start)
	apiError(t, err, awstest.CodeRequestLimitExceeded, "")
	if r := s.Calls("ec2", "StartInstances"); r[len(r)-2].Status != http.StatusInternalServerError {
		t.Errorf("InternalError answered %d, want 500", r[len(r)-2].Status)
	}
	s.FailNext("StartInstances", 5, 0, awstest.CodeInternalError, "")
	s.FailNext("StartInstances", 0, 0, "", "")
	if _, err := once.StartInstances(t.Context(), start); err != nil {
		t.Errorf("StartInstances after forgetting the failures: %v", err)
	}

	// SetEC2Failure still fails every call.
	s.SetEC2Failure(awstest.CodeUnauthorizedOperation, "You are not authorized to perform this operation.")
	_, err = once.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{})
	apiError(t, err, awstest.CodeUnauthorizedOperation, "")
	_, err = once.StartInstances(t.Context(), start)
	apiError(t, err, awstest.CodeUnauthorizedOperation, "")
	_, err = once.CreateTags(t.Context(), &ec2.CreateTagsInput{Resources: []string{s.InstanceID}, Tags: []types.Tag{{Key: aws.String("k")}}})
	apiError(t, err, awstest.CodeUnauthorizedOperation, "")
}

func TestCreateAndDeleteTags(t *testing.T) {
	s, _, client := newFleet(t)
	s.SetInstanceMetadataTags(true)
	md := imds.NewFromConfig(loadConfig(t))
	other := s.AddInstance(awstest.Instance{})
	tag := func(k, v string) types.Tag { return types.Tag{Key: aws.String(k), Value: aws.String(v)} }

	_, err := client.CreateTags(t.Context(), &ec2.CreateTagsInput{Resources: []string{s.InstanceID, other},
		Tags: []types.Tag{tag("Name", "devbox"), tag("connwatch:hold-until", "2026-03-01T18:00:00Z")}})
	if err != nil {
		t.Fatalf("CreateTags: %v", err)
	}
	got := ids(describe(t, client, &ec2.DescribeInstancesInput{Filters: []types.Filter{filter("tag:connwatch:hold-until", "2026-03-01T*")}}))
	if diff := cmp.Diff([]string{s.InstanceID, other}, got); diff != "" {
		t.Errorf("tagged instances (-want +got):\n%s", diff)
	}
	if v := metadata(t, md, "tags/instance/connwatch:hold-until"); v != "2026-03-01T18:00:00Z" {
		t.Errorf("IMDS hold tag = %q", v)
	}
	if v := metadata(t, md, "tags/instance"); v != "Name\nconnwatch:hold-until" {
		t.Errorf("IMDS tags = %q", v)
	}

	del := func(tags ...types.Tag) {
		t.Helper()
		if _, err := client.DeleteTags(t.Context(), &ec2.DeleteTagsInput{Resources: []string{s.InstanceID}, Tags: tags}); err != nil {
			t.Fatalf("DeleteTags: %v", err)
		}
	}
	del(tag("connwatch:hold-until", "another time")) // a value that does not match: kept
	if in, _ := s.Instance(s.InstanceID); in.Tags["connwatch:hold-until"] == "" {
		t.Errorf("tag with another value deleted")
	}
	del(types.Tag{Key: aws.String("connwatch:hold-until")})
	if _, err := md.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: "tags/instance/connwatch:hold-until"}); err == nil {
		t.Errorf("deleted tag still in IMDS")
	}
	del()
	if in, _ := s.Instance(s.InstanceID); len(in.Tags) != 0 {
		t.Errorf("tags after deleting all: %v", in.Tags)
	}
	if in, _ := s.Instance(other); len(in.Tags) != 2 {
		t.Errorf("other instance's tags: %v", in.Tags)
	}

	create := func(ids []string, tags ...types.Tag) error {
		_, err := client.CreateTags(t.Context(), &ec2.CreateTagsInput{Resources: ids, Tags: tags})
		return err
	}
	apiError(t, create([]string{"i-0000000000000000f"}, tag("a", "b")), awstest.CodeInstanceNotFound, "")
	apiError(t, create([]string{"vol-0123456789abcdef0"}, tag("a", "b")), "InvalidID", "")
	apiError(t, create([]string{other}, tag("aws:reserved", "b")), "InvalidParameterValue", "")
}

func metadata(t *testing.T, c *imds.Client, path string) string {
	t.Helper()
	out, err := c.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: path})
	if err != nil {
		t.Fatalf("GetMetadata %s: %v", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

// TestRealClockTransitions runs the default clock, as an end-to-end test
// does: the timers are real ones (of a millisecond here). A callback may
// call the server's methods, even change a state.
func TestRealClockTransitions(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	client := ec2.NewFromConfig(loadConfig(t))
	s.SetTransitions(awstest.Transitions{Pending: time.Millisecond, Stopping: time.Millisecond})
	id := s.AddInstance(awstest.Instance{State: awstest.InstanceStopped})
	states := recordStates(s)
	s.OnState(func(got, state string) {
		if in, ok := s.Instance(got); !ok || in.State == "" {
			t.Errorf("Instance(%s) in a callback: %+v, %v", got, in, ok)
		}
		if got == id && state == awstest.InstanceStopped {
			s.SetState(id, awstest.InstanceRunning)
		}
	})
	if _, err := client.StartInstances(t.Context(), &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pending", "running"} {
		if e := nextState(t, states); e != id+" "+want {
			t.Errorf("state change %q, want %s", e, want)
		}
	}
	s.SetState(id, awstest.InstanceStopping)
	for _, want := range []string{"stopping", "stopped", "running"} {
		if e := nextState(t, states); e != id+" "+want {
			t.Errorf("state change %q, want %s", e, want)
		}
	}
	// A transition still owed when the test ends is stopped by New's
	// cleanup.
	s.SetTransitions(awstest.Transitions{Stopping: time.Hour})
	if _, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
}
