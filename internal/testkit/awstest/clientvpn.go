package awstest

import (
	"encoding/base64"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"
)

// AWS Client VPN as EC2 serves it: DescribeClientVpnConnections over the
// EC2 Query protocol, answered from connections a test creates with
// AddClientVPNEndpoint, ConnectClientVPN and DisconnectClientVPN.
//
// The reply's shape is the one the SDK's deserializer
// (awsEc2query_deserializeOpDocumentDescribeClientVpnConnectionsOutput and
// awsEc2query_deserializeDocumentClientVpnConnection in service/ec2
// v1.344.1) reads and the AWS CLI's documented example shows:
//
//	<DescribeClientVpnConnectionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
//	  <requestId>...</requestId>
//	  <connections>
//	    <item>
//	      <clientVpnEndpointId>cvpn-endpoint-123456789123abcde</clientVpnEndpointId>
//	      <timestamp>2019-08-12 07:58:34</timestamp>
//	      <connectionId>cvpn-connection-0e03eb24267165acd</connectionId>
//	      <connectionEstablishedTime>2019-08-12 07:57:14</connectionEstablishedTime>
//	      <ingressBytes>32302</ingressBytes> ... (egressBytes, ingressPackets, egressPackets)
//	      <clientIp>172.31.0.225</clientIp>
//	      <commonName>client1.domain.tld</commonName>
//	      <status><code>terminated</code></status>
//	      <connectionEndTime>2019-08-12 07:58:34</connectionEndTime>
//	    </item>
//	  </connections>
//	  <nextToken>...</nextToken>
//	</DescribeClientVpnConnectionsResponse>
//
// Times are strings, not timestamps, in the API model: "YYYY-MM-DD
// hh:mm:ss" without a zone (UTC), and connectionEndTime is "-" while the
// connection is up. Counters are decimal strings. clientIp is the address
// the endpoint assigned to the client from its client CIDR range, not the
// client's public address (which only the connection log has, as
// device-ip).

// ClientVPNTimeLayout is how Client VPN writes times: UTC, no zone.
const ClientVPNTimeLayout = "2006-01-02 15:04:05"

// ClientVPNRetention is how long a terminated connection stays listed:
// DescribeClientVpnConnections "describes active client connections and
// connections that have been terminated within the last 60 minutes".
const ClientVPNRetention = time.Hour

// Client VPN connection states (ClientVpnConnectionStatusCode).
const (
	ClientVPNActive            = "active"
	ClientVPNTerminating       = "terminating"
	ClientVPNTerminated        = "terminated"
	ClientVPNFailedToTerminate = "failed-to-terminate"
)

// Client VPN error codes.
const (
	// CodeClientVPNEndpointNotFound is EC2's answer for an endpoint id
	// it does not know.
	CodeClientVPNEndpointNotFound = "InvalidClientVpnEndpointId.NotFound"
	// CodeRequestLimitExceeded is EC2's throttling error (HTTP 503); the
	// SDK's standard retryer retries it.
	CodeRequestLimitExceeded = "RequestLimitExceeded"
	// CodeUnauthorizedOperation is EC2's answer when IAM denies the
	// action (HTTP 403), which the SDK does not retry.
	CodeUnauthorizedOperation = "UnauthorizedOperation"
)

// Page sizes DescribeClientVpnConnections accepts ("Valid Range: Minimum
// value of 5. Maximum value of 1000."); without MaxResults the fake
// answers pages of ClientVPNMaxResults.
const (
	ClientVPNMinResults = 5
	ClientVPNMaxResults = 1000
)

// ClientVPNConnection is one client connection to a Client VPN endpoint,
// as a test describes it to ConnectClientVPN.
type ClientVPNConnection struct {
	// ID is the connection id; empty means one is made up in AWS's form
	// (cvpn-connection-<17 hex digits>).
	ID string
	// ClientIP and ClientIPv6 are the addresses the endpoint assigned to
	// the client (clientIp, clientIpv6Address).
	ClientIP   string
	ClientIPv6 string
	// CommonName is the client certificate's CN (or the AD user name);
	// Username is set only for Active Directory or SAML authentication.
	CommonName string
	Username   string
	// EstablishedAt is when the connection was made; zero means the
	// server clock's now, truncated to the second as AWS reports it.
	EstablishedAt time.Time
	// Traffic counters: ingress is sent by the client, egress received
	// by it.
	IngressBytes, EgressBytes     uint64
	IngressPackets, EgressPackets uint64
	// PostureComplianceStatuses are a client connect handler's statuses.
	PostureComplianceStatuses []string
	// EstablishedTimeText, when set, is sent verbatim as
	// connectionEstablishedTime instead of EstablishedAt (to test
	// clients against malformed replies).
	EstablishedTimeText string

	// Status and EndedAt are kept by the server and read back with
	// ClientVPNConnections; ConnectClientVPN ignores them.
	Status  string
	EndedAt time.Time
}

type cvpnEndpoint struct {
	conns   []*ClientVPNConnection // in connection order
	seqs    map[string]uint64      // connection id -> position in the order
	nextSeq uint64
}

// cvpnState is the Client VPN state of one Server. It lives outside the
// Server struct (awstest.go is shared) in cvpnStates, which holds it only
// as long as its Server is reachable.
type cvpnState struct {
	mu        sync.Mutex
	endpoints map[string]*cvpnEndpoint
	failures  map[string]ec2Failure // by endpoint id, known or not
	ids       uint64                // for made-up connection ids
}

// cvpnStates maps a Server (weakly) to its Client VPN state; an entry is
// removed when its Server is garbage collected.
var cvpnStates sync.Map // weak.Pointer[Server] -> *cvpnState

func (s *Server) registerClientVPN() {
	st := &cvpnState{endpoints: make(map[string]*cvpnEndpoint), failures: make(map[string]ec2Failure)}
	key := weak.Make(s)
	cvpnStates.Store(key, st)
	runtime.AddCleanup(s, func(k weak.Pointer[Server]) { cvpnStates.Delete(k) }, key)
	// The handler reaches the Server only weakly, so that the map's value
	// never keeps it alive; during a request the Server is in use.
	s.handlers["ec2/DescribeClientVpnConnections"] = func(r *Request) Response {
		return st.describe(key.Value(), r)
	}
}

func (s *Server) clientVPN() *cvpnState {
	v, ok := cvpnStates.Load(weak.Make(s))
	if !ok {
		panic("awstest: Server not made by New")
	}
	return v.(*cvpnState)
}

// endpoint returns the named endpoint; st.mu is held.
func (st *cvpnState) endpoint(id string) *cvpnEndpoint {
	ep := st.endpoints[id]
	if ep == nil {
		panic(fmt.Sprintf("awstest: unknown Client VPN endpoint %q (AddClientVPNEndpoint first)", id))
	}
	return ep
}

// AddClientVPNEndpoint creates an endpoint with no connections. Adding an
// existing one does nothing.
func (s *Server) AddClientVPNEndpoint(id string) {
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.endpoints[id] == nil {
		st.endpoints[id] = &cvpnEndpoint{seqs: make(map[string]uint64)}
	}
}

// ConnectClientVPN adds an active connection to endpoint and returns its
// id. It panics if the endpoint was not added or the id is taken.
func (s *Server) ConnectClientVPN(endpoint string, c ClientVPNConnection) string {
	now := s.clock.Now()
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	ep := st.endpoint(endpoint)
	if c.ID == "" {
		st.ids++
		c.ID = fmt.Sprintf("cvpn-connection-0%016x", st.ids)
	}
	if _, dup := ep.seqs[c.ID]; dup {
		panic(fmt.Sprintf("awstest: Client VPN connection %s already exists", c.ID))
	}
	if c.EstablishedAt.IsZero() {
		c.EstablishedAt = now.UTC().Truncate(time.Second)
	}
	c.PostureComplianceStatuses = slices.Clone(c.PostureComplianceStatuses)
	c.Status, c.EndedAt = ClientVPNActive, time.Time{}
	ep.nextSeq++
	ep.seqs[c.ID] = ep.nextSeq
	ep.conns = append(ep.conns, &c)
	return c.ID
}

// conn returns a connection; st.mu is held.
func (st *cvpnState) conn(endpoint, id string) *ClientVPNConnection {
	for _, c := range st.endpoint(endpoint).conns {
		if c.ID == id {
			return c
		}
	}
	panic(fmt.Sprintf("awstest: no Client VPN connection %s on %s", id, endpoint))
}

// DisconnectClientVPN terminates a connection: its status becomes
// terminated and its end time the server clock's now. It stays listed for
// ClientVPNRetention after that, as on AWS.
func (s *Server) DisconnectClientVPN(endpoint, connID string) {
	now := s.clock.Now().UTC().Truncate(time.Second)
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.conn(endpoint, connID)
	c.Status, c.EndedAt = ClientVPNTerminated, now
}

// SetClientVPNStatus sets a connection's status code directly, e.g. to
// terminating or failed-to-terminate. Setting terminated is
// DisconnectClientVPN.
func (s *Server) SetClientVPNStatus(endpoint, connID, status string) {
	if status == ClientVPNTerminated {
		s.DisconnectClientVPN(endpoint, connID)
		return
	}
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.conn(endpoint, connID)
	c.Status, c.EndedAt = status, time.Time{}
}

// AddClientVPNTraffic adds to a connection's counters: in bytes (and one
// packet per 1,000 bytes, at least one) sent by the client, out received.
func (s *Server) AddClientVPNTraffic(endpoint, connID string, in, out uint64) {
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.conn(endpoint, connID)
	c.IngressBytes += in
	c.EgressBytes += out
	c.IngressPackets += packets(in)
	c.EgressPackets += packets(out)
}

func packets(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	return max(1, n/1000)
}

// SetClientVPNFailure makes DescribeClientVpnConnections for endpoint fail
// with code and msg, as EC2 would (e.g. CodeRequestLimitExceeded,
// CodeUnauthorizedOperation); the HTTP status follows the code. An empty
// code clears it. The endpoint need not exist.
func (s *Server) SetClientVPNFailure(endpoint, code, msg string) {
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	if code == "" {
		delete(st.failures, endpoint)
		return
	}
	st.failures[endpoint] = ec2Failure{code, msg}
}

// ClientVPNConnections returns copies of an endpoint's connections that
// the server still keeps, in connection order.
func (s *Server) ClientVPNConnections(endpoint string) []ClientVPNConnection {
	now := s.clock.Now()
	st := s.clientVPN()
	st.mu.Lock()
	defer st.mu.Unlock()
	ep := st.endpoint(endpoint)
	ep.expire(now)
	out := make([]ClientVPNConnection, 0, len(ep.conns))
	for _, c := range ep.conns {
		cc := *c
		cc.PostureComplianceStatuses = slices.Clone(c.PostureComplianceStatuses)
		out = append(out, cc)
	}
	return out
}

// expire forgets connections terminated more than ClientVPNRetention
// before now.
func (ep *cvpnEndpoint) expire(now time.Time) {
	ep.conns = slices.DeleteFunc(ep.conns, func(c *ClientVPNConnection) bool {
		gone := c.Status == ClientVPNTerminated && now.Sub(c.EndedAt) > ClientVPNRetention
		if gone {
			delete(ep.seqs, c.ID)
		}
		return gone
	})
}

// describe is DescribeClientVpnConnections. Parameters: ClientVpnEndpointId
// (required), MaxResults (5-1000), NextToken, Filter.N.Name with
// Filter.N.Value.M (connection-id, username), DryRun. s answers for
// SetEC2Failure; it is nil only once the Server is unreachable.
func (st *cvpnState) describe(s *Server, r *Request) Response {
	id := r.Params.Get("ClientVpnEndpointId")
	if id == "" {
		return ec2Error(r, ec2Failure{CodeMissingParameter, "The request must contain the parameter ClientVpnEndpointId"})
	}
	limit, f := maxResults(r, ClientVPNMinResults, ClientVPNMaxResults)
	if f != nil {
		return ec2Error(r, *f)
	}
	if limit == 0 {
		limit = ClientVPNMaxResults
	}
	filters, errResp, ok := cvpnFilters(r)
	if !ok {
		return errResp
	}
	dryRun, err := boolParam(r, "DryRun")
	if err != nil {
		return ec2Error(r, ec2Failure{CodeInvalidParameterValue, err.Error()})
	}
	if s != nil {
		s.mu.Lock()
		f := s.ec2.failure
		s.mu.Unlock()
		if f != nil {
			return ec2Error(r, *f)
		}
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	if f, ok := st.failures[id]; ok {
		return ec2Error(r, f)
	}
	ep := st.endpoints[id]
	if ep == nil {
		return ec2Error(r, ec2Failure{CodeClientVPNEndpointNotFound, fmt.Sprintf("The clientVpnEndpoint ID '%s' does not exist", id)})
	}
	if dryRun {
		return dryRunError(r)
	}
	var after uint64
	if tok := r.Params.Get("NextToken"); tok != "" {
		seq, ok := parseSeqToken(tok, id)
		if !ok {
			return ec2Error(r, ec2Failure{CodeInvalidPaginationToken, "The specified pagination token is not valid or is expired."})
		}
		after = seq
	}

	now := r.Time
	ep.expire(now)
	var items strings.Builder
	n, more := 0, false
	var last uint64
	for _, c := range ep.conns {
		seq := ep.seqs[c.ID]
		if seq <= after || !filters.match(c) {
			continue
		}
		if n == limit {
			more = true
			break
		}
		writeCVPNItem(&items, id, c, now)
		n++
		last = seq
	}
	inner := "<connections>" + items.String() + "</connections>"
	if more {
		inner += "<nextToken>" + xmlText(seqToken(id, last)) + "</nextToken>"
	}
	return QueryResponse(r, EC2Namespace, inner)
}

func writeCVPNItem(b *strings.Builder, endpoint string, c *ClientVPNConnection, now time.Time) {
	el := func(name, v string) {
		if v != "" {
			fmt.Fprintf(b, "<%s>%s</%s>", name, xmlText(v), name)
		}
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	// timestamp: the time of the counters. The documented example shows
	// the end time for a terminated connection and a recent time for an
	// active one.
	ts, end := now, "-"
	if c.Status == ClientVPNTerminated {
		ts, end = c.EndedAt, c.EndedAt.UTC().Format(ClientVPNTimeLayout)
	}
	established := c.EstablishedTimeText
	if established == "" {
		established = c.EstablishedAt.UTC().Format(ClientVPNTimeLayout)
	}
	b.WriteString("<item>")
	el("clientVpnEndpointId", endpoint)
	el("timestamp", ts.UTC().Format(ClientVPNTimeLayout))
	el("connectionId", c.ID)
	el("username", c.Username)
	el("connectionEstablishedTime", established)
	el("ingressBytes", u(c.IngressBytes))
	el("egressBytes", u(c.EgressBytes))
	el("ingressPackets", u(c.IngressPackets))
	el("egressPackets", u(c.EgressPackets))
	el("clientIp", c.ClientIP)
	el("clientIpv6Address", c.ClientIPv6)
	el("commonName", c.CommonName)
	b.WriteString("<status><code>" + xmlText(c.Status) + "</code></status>")
	el("connectionEndTime", end)
	if len(c.PostureComplianceStatuses) > 0 {
		b.WriteString("<postureComplianceStatusSet>")
		for _, p := range c.PostureComplianceStatuses {
			el("item", p)
		}
		b.WriteString("</postureComplianceStatusSet>")
	}
	b.WriteString("</item>")
}

// cvpnFilter is the Filter.N parameters: each filter's values are ORed,
// filters ANDed.
type cvpnFilter map[string][]string

func (f cvpnFilter) match(c *ClientVPNConnection) bool {
	for name, vals := range f {
		v := c.ID
		if name == "username" {
			v = c.Username
		}
		if !slices.Contains(vals, v) {
			return false
		}
	}
	return true
}

func cvpnFilters(r *Request) (cvpnFilter, Response, bool) {
	f := cvpnFilter{}
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		name := r.Params.Get(p + ".Name")
		if name == "" {
			if r.Params.Has(p + ".Value.1") {
				return nil, ec2Error(r, ec2Failure{CodeInvalidParameterValue, "The filter 'null' is invalid"}), false
			}
			return f, Response{}, true
		}
		if name != "connection-id" && name != "username" {
			return nil, ec2Error(r, ec2Failure{CodeInvalidParameterValue, fmt.Sprintf("The filter '%s' is invalid", name)}), false
		}
		f[name] = append(f[name], indexedParams(r, p+".Value")...)
	}
}

// seqToken is an opaque NextToken: a scope (a Client VPN endpoint, or
// "instances") and the position of the last item returned, so that pages
// stay right when items come and go between requests.
func seqToken(scope string, seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(scope + "/" + strconv.FormatUint(seq, 10)))
}

func parseSeqToken(tok, scope string) (uint64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	ep, seq, ok := strings.Cut(string(b), "/")
	if !ok || ep != scope {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	return n, err == nil
}
