package clientvpn

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TimeLayout is how DescribeClientVpnConnections writes
// connectionEstablishedTime and connectionEndTime: strings in the API
// model, not timestamps, "YYYY-MM-DD hh:mm:ss" with no zone (the AWS CLI
// reference example: "2019-08-12 07:57:14"). Like every time AWS reports,
// they are UTC.
const TimeLayout = "2006-01-02 15:04:05"

// record is one listed connection, parsed.
type record struct {
	id          string
	status      types.ClientVpnConnectionStatusCode
	commonName  string
	username    string
	virtualAddr string
	// start and end are zero when unknown: not sent, "-" (a live
	// connection's end), or malformed (then problems says so).
	start, end      time.Time
	ingress, egress uint64
	problems        []string
}

// parseConnection reads what the source uses from one connection. It
// never fails: fields it cannot read are left zero and named in problems.
func parseConnection(c types.ClientVpnConnection) record {
	r := record{
		id:         aws.ToString(c.ConnectionId),
		commonName: aws.ToString(c.CommonName),
		username:   aws.ToString(c.Username),
		// clientIp is "allocated from the client IPv4 CIDR range" of the
		// endpoint (Client VPN admin guide, connection logging) and
		// clientIpv6Address is likewise assigned: both are addresses
		// inside the tunnel. The client's public address (device-ip) is
		// only in connection logs, not in this API.
		virtualAddr: aws.ToString(c.ClientIp),
	}
	if r.virtualAddr == "" {
		r.virtualAddr = aws.ToString(c.ClientIpv6Address)
	}
	if c.Status != nil {
		r.status = c.Status.Code
	}
	var err error
	if r.start, err = parseTime(aws.ToString(c.ConnectionEstablishedTime)); err != nil {
		r.problems = append(r.problems, "connectionEstablishedTime: "+err.Error())
	}
	if r.end, err = parseTime(aws.ToString(c.ConnectionEndTime)); err != nil {
		r.problems = append(r.problems, "connectionEndTime: "+err.Error())
	} else if r.end.IsZero() && r.status == types.ClientVpnConnectionStatusCodeTerminated {
		r.problems = append(r.problems, "terminated without a connectionEndTime")
	}
	if r.status == "" {
		r.problems = append(r.problems, "no status (counted as connected)")
	}
	if r.ingress, err = parseCount(aws.ToString(c.IngressBytes)); err != nil {
		r.problems = append(r.problems, "ingressBytes: "+err.Error())
	}
	if r.egress, err = parseCount(aws.ToString(c.EgressBytes)); err != nil {
		r.problems = append(r.problems, "egressBytes: "+err.Error())
	}
	return r
}

// parseTime parses a Client VPN time strictly: exactly TimeLayout, in
// UTC. Empty, "-" (what the API sends as a live connection's end time)
// and "NA" (the connection log's equivalent) mean not set.
func parseTime(s string) (time.Time, error) {
	switch s {
	case "", "-", "NA":
		return time.Time{}, nil
	}
	// time.Parse would also take a fractional second the layout does not
	// have; the length check keeps it to the documented form.
	t, err := time.ParseInLocation(TimeLayout, s, time.UTC)
	if err != nil || len(s) != len(TimeLayout) {
		return time.Time{}, fmt.Errorf("%q is not a time of the form YYYY-MM-DD hh:mm:ss", s)
	}
	return t, nil
}

// parseCount parses a counter, which the API sends as a decimal string.
func parseCount(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a count", s)
	}
	return n, nil
}
