package awstest_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// newEC2 starts a server on a fake clock at start and an EC2 client for
// it, built the way production code builds one.
func newEC2(t *testing.T, start time.Time, opts ...func(*ec2.Options)) (*awstest.Server, *clock.Fake, *ec2.Client) {
	t.Helper()
	fc := clock.NewFake(start)
	s := awstest.New(t, awstest.WithClock(fc))
	s.Env(t)
	return s, fc, ec2.NewFromConfig(loadConfig(t), opts...)
}

func describeAll(t *testing.T, c *ec2.Client, in *ec2.DescribeClientVpnConnectionsInput) []types.ClientVpnConnection {
	t.Helper()
	var out []types.ClientVpnConnection
	for _, page := range allPages(t, "DescribeClientVpnConnections", ec2.NewDescribeClientVpnConnectionsPaginator(c, in)) {
		out = append(out, page.Connections...)
	}
	return out
}

var ignoreSDK = cmpopts.IgnoreUnexported(types.ClientVpnConnection{}, types.ClientVpnConnectionStatus{})

// TestClientVPNDocumentedExample rebuilds the example of the AWS CLI
// reference for describe-client-vpn-connections (one connection
// terminated, one active) and checks that the SDK reads back exactly the
// documented values: element names, time format, counters as strings and
// "-" as the end time of a live connection.
func TestClientVPNDocumentedExample(t *testing.T) {
	const ep = "cvpn-endpoint-123456789123abcde"
	s, fc, client := newEC2(t, time.Date(2019, 8, 12, 7, 57, 14, 0, time.UTC))
	s.AddClientVPNEndpoint(ep)
	id1 := s.ConnectClientVPN(ep, awstest.ClientVPNConnection{ID: "cvpn-connection-0e03eb24267165acd",
		ClientIP: "172.31.0.225", CommonName: "client1.domain.tld",
		IngressBytes: 32302, EgressBytes: 5696, IngressPackets: 332, EgressPackets: 67})
	fc.Advance(80 * time.Second) // 07:58:34
	s.DisconnectClientVPN(ep, id1)
	fc.Set(time.Date(2019, 8, 12, 8, 2, 53, 0, time.UTC))
	s.ConnectClientVPN(ep, awstest.ClientVPNConnection{ID: "cvpn-connection-00668867a40f18253",
		ClientIP: "172.31.0.226", CommonName: "client1.domain.tld",
		IngressBytes: 2951, EgressBytes: 2611, IngressPackets: 9, EgressPackets: 6})
	fc.Advance(time.Second) // 08:02:54

	got := describeAll(t, client, &ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)})

	// The documented output, field for field.
	want := []types.ClientVpnConnection{{
		ClientVpnEndpointId:       aws.String(ep),
		Timestamp:                 aws.String("2019-08-12 07:58:34"),
		ConnectionId:              aws.String("cvpn-connection-0e03eb24267165acd"),
		ConnectionEstablishedTime: aws.String("2019-08-12 07:57:14"),
		IngressBytes:              aws.String("32302"),
		EgressBytes:               aws.String("5696"),
		IngressPackets:            aws.String("332"),
		EgressPackets:             aws.String("67"),
		ClientIp:                  aws.String("172.31.0.225"),
		CommonName:                aws.String("client1.domain.tld"),
		Status:                    &types.ClientVpnConnectionStatus{Code: types.ClientVpnConnectionStatusCodeTerminated},
		ConnectionEndTime:         aws.String("2019-08-12 07:58:34"),
	}, {
		ClientVpnEndpointId:       aws.String(ep),
		Timestamp:                 aws.String("2019-08-12 08:02:54"),
		ConnectionId:              aws.String("cvpn-connection-00668867a40f18253"),
		ConnectionEstablishedTime: aws.String("2019-08-12 08:02:53"),
		IngressBytes:              aws.String("2951"),
		EgressBytes:               aws.String("2611"),
		IngressPackets:            aws.String("9"),
		EgressPackets:             aws.String("6"),
		ClientIp:                  aws.String("172.31.0.226"),
		CommonName:                aws.String("client1.domain.tld"),
		Status:                    &types.ClientVpnConnectionStatus{Code: types.ClientVpnConnectionStatusCodeActive},
		ConnectionEndTime:         aws.String("-"),
	}}
	if diff := cmp.Diff(want, got, ignoreSDK); diff != "" {
		t.Errorf("connections (-documented +got):\n%s", diff)
	}

	calls := s.Calls("ec2", "DescribeClientVpnConnections")
	if len(calls) != 1 || calls[0].Status != http.StatusOK || calls[0].Params.Get("ClientVpnEndpointId") != ep ||
		calls[0].Params.Get("Version") != "2016-11-15" || calls[0].Auth == nil {
		t.Errorf("recorded calls = %+v", calls)
	}
}

func TestClientVPNOptionalFields(t *testing.T) {
	const ep = "cvpn-endpoint-0123456789abcdef0"
	s, _, client := newEC2(t, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s.AddClientVPNEndpoint(ep)
	s.ConnectClientVPN(ep, awstest.ClientVPNConnection{ID: "cvpn-connection-0123456789abcdef0",
		ClientIPv6: "2001:db8::7", CommonName: "alice", Username: "alice@example.com",
		PostureComplianceStatuses: []string{"compliant", "checked"}})
	got := describeAll(t, client, &ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)})
	if len(got) != 1 {
		t.Fatalf("got %d connections, want 1", len(got))
	}
	c := got[0]
	if aws.ToString(c.ClientIpv6Address) != "2001:db8::7" || c.ClientIp != nil || aws.ToString(c.Username) != "alice@example.com" ||
		!cmp.Equal(c.PostureComplianceStatuses, []string{"compliant", "checked"}) {
		t.Errorf("connection = ipv6 %v ip %v user %v posture %v", aws.ToString(c.ClientIpv6Address), c.ClientIp,
			aws.ToString(c.Username), c.PostureComplianceStatuses)
	}
}

func TestClientVPNPagination(t *testing.T) {
	const ep = "cvpn-endpoint-0123456789abcdef0"
	s, fc, client := newEC2(t, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s.AddClientVPNEndpoint(ep)
	var want []string
	for range 12 {
		want = append(want, s.ConnectClientVPN(ep, awstest.ClientVPNConnection{CommonName: "c"}))
		fc.Advance(time.Second)
	}
	got := describeAll(t, client, &ec2.DescribeClientVpnConnectionsInput{
		ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(5)})
	var ids []string
	for _, c := range got {
		ids = append(ids, aws.ToString(c.ConnectionId))
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	checkPages(t, s, "DescribeClientVpnConnections", 3, "5")

	// A connection made between two pages lands on a later page; none
	// are repeated or skipped.
	p := ec2.NewDescribeClientVpnConnectionsPaginator(client, &ec2.DescribeClientVpnConnectionsInput{
		ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(10)})
	first, err := p.NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	extra := s.ConnectClientVPN(ep, awstest.ClientVPNConnection{})
	second, err := p.NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Connections) != 10 || len(second.Connections) != 3 || p.HasMorePages() ||
		aws.ToString(second.Connections[2].ConnectionId) != extra {
		t.Errorf("pages of %d and %d, more %v", len(first.Connections), len(second.Connections), p.HasMorePages())
	}
}

func TestClientVPNFilters(t *testing.T) {
	const ep = "cvpn-endpoint-0123456789abcdef0"
	s, _, client := newEC2(t, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s.AddClientVPNEndpoint(ep)
	a := s.ConnectClientVPN(ep, awstest.ClientVPNConnection{Username: "alice"})
	b := s.ConnectClientVPN(ep, awstest.ClientVPNConnection{Username: "bob"})
	s.ConnectClientVPN(ep, awstest.ClientVPNConnection{Username: "carol"})
	ids := func(fs ...types.Filter) []string {
		var out []string
		for _, c := range describeAll(t, client, &ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), Filters: fs}) {
			out = append(out, aws.ToString(c.ConnectionId))
		}
		return out
	}
	if got := ids(types.Filter{Name: aws.String("username"), Values: []string{"alice", "bob"}}); !cmp.Equal(got, []string{a, b}) {
		t.Errorf("username alice|bob = %v", got)
	}
	if got := ids(types.Filter{Name: aws.String("username"), Values: []string{"alice", "bob"}},
		types.Filter{Name: aws.String("connection-id"), Values: []string{b}}); !cmp.Equal(got, []string{b}) {
		t.Errorf("username alice|bob and connection-id %s = %v", b, got)
	}
	_, err := client.DescribeClientVpnConnections(t.Context(), &ec2.DescribeClientVpnConnectionsInput{
		ClientVpnEndpointId: aws.String(ep), Filters: []types.Filter{{Name: aws.String("common-name"), Values: []string{"x"}}}})
	apiError(t, err, "InvalidParameterValue", "")
}

func TestClientVPNErrors(t *testing.T) {
	const ep, other = "cvpn-endpoint-0123456789abcdef0", "cvpn-endpoint-0fedcba9876543210"
	// One attempt: the throttling error is retried by the standard
	// retryer otherwise, with real sleeps.
	s, _, client := newEC2(t, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	s.AddClientVPNEndpoint(ep)
	s.AddClientVPNEndpoint(other)
	call := func(in ec2.DescribeClientVpnConnectionsInput) error {
		_, err := client.DescribeClientVpnConnections(t.Context(), &in)
		return err
	}
	tests := []struct {
		name   string
		in     ec2.DescribeClientVpnConnectionsInput
		code   string
		status int
	}{
		{"unknown endpoint", ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String("cvpn-endpoint-00000000000000000")},
			awstest.CodeClientVPNEndpointNotFound, http.StatusBadRequest},
		{"page too small", ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(4)},
			"InvalidParameterValue", http.StatusBadRequest},
		{"page too large", ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(1001)},
			"InvalidParameterValue", http.StatusBadRequest},
		{"foreign token", ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), NextToken: aws.String("bm9wZQ")},
			"InvalidPaginationToken", http.StatusBadRequest},
		{"dry run", ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), DryRun: aws.Bool(true)},
			"DryRunOperation", http.StatusPreconditionFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(s.Requests())
			apiError(t, call(tt.in), tt.code, "")
			reqs := s.Requests()[n:]
			if len(reqs) != 1 || reqs[0].Status != tt.status || reqs[0].ErrorCode != tt.code {
				t.Errorf("recorded %+v, want one with status %d", reqs, tt.status)
			}
		})
	}
	for _, n := range []int32{5, 1000} {
		if err := call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(n)}); err != nil {
			t.Errorf("MaxResults %d: %v", n, err)
		}
	}

	// Injected failures are per endpoint.
	s.SetClientVPNFailure(ep, awstest.CodeUnauthorizedOperation, "You are not authorized to perform this operation.")
	apiError(t, call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)}), awstest.CodeUnauthorizedOperation, "")
	if err := call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(other)}); err != nil {
		t.Errorf("other endpoint: %v", err)
	}
	s.SetClientVPNFailure(ep, awstest.CodeRequestLimitExceeded, "Request limit exceeded.")
	apiError(t, call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)}), awstest.CodeRequestLimitExceeded, "")
	if r := s.Requests(); r[len(r)-1].Status != http.StatusServiceUnavailable {
		t.Errorf("throttling answered %d, want 503", r[len(r)-1].Status)
	}
	s.SetClientVPNFailure(ep, "", "")
	if err := call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)}); err != nil {
		t.Errorf("after clearing the failure: %v", err)
	}
	// SetEC2Failure covers every EC2 action, this one too.
	s.SetEC2Failure("AuthFailure", "AWS was not able to validate the provided access credentials")
	apiError(t, call(ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(other)}), "AuthFailure", "")
}

// TestClientVPNRetention: a terminated connection is listed, with its end
// time, for an hour after it ended by the server's clock, then no more.
func TestClientVPNRetention(t *testing.T) {
	const ep = "cvpn-endpoint-0123456789abcdef0"
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, fc, client := newEC2(t, start)
	s.AddClientVPNEndpoint(ep)
	id := s.ConnectClientVPN(ep, awstest.ClientVPNConnection{CommonName: "c"})
	s.AddClientVPNTraffic(ep, id, 4000, 9000)
	s.SetClientVPNStatus(ep, id, awstest.ClientVPNTerminating)
	list := func() []types.ClientVpnConnection {
		return describeAll(t, client, &ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep)})
	}
	if got := list(); len(got) != 1 || got[0].Status.Code != types.ClientVpnConnectionStatusCodeTerminating ||
		aws.ToString(got[0].IngressBytes) != "4000" || aws.ToString(got[0].IngressPackets) != "4" {
		t.Fatalf("terminating: %+v", got)
	}
	fc.Advance(10 * time.Second)
	s.DisconnectClientVPN(ep, id)
	fc.Advance(awstest.ClientVPNRetention - time.Second)
	got := list()
	if len(got) != 1 || got[0].Status.Code != types.ClientVpnConnectionStatusCodeTerminated ||
		aws.ToString(got[0].ConnectionEndTime) != "2026-03-01 12:00:10" ||
		aws.ToString(got[0].ConnectionEstablishedTime) != "2026-03-01 12:00:00" {
		t.Fatalf("59:59 after the end: %+v", got)
	}
	fc.Advance(2 * time.Second)
	if got := list(); len(got) != 0 {
		t.Errorf("an hour after the end: %d connections listed, want 0", len(got))
	}
	if n := len(s.ClientVPNConnections(ep)); n != 0 {
		t.Errorf("server still keeps %d connections", n)
	}
}
