package awstest

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// EC2Namespace is the XML namespace of EC2 API version 2016-11-15, the
// version every current SDK sends.
const EC2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// EC2 error codes a hibernating stop can meet.
const (
	// CodeUnsupportedHibernation is what StopInstances with Hibernate=true
	// answers for an instance not configured for hibernation at launch.
	CodeUnsupportedHibernation = "UnsupportedHibernationConfiguration"
	// CodeUnsupportedOperation is answered, among others, for instances
	// that cannot hibernate at all (Spot, unsupported types).
	CodeUnsupportedOperation = "UnsupportedOperation"
)

type ec2State struct {
	failure    *ec2Failure // every EC2 call
	hibFailure *ec2Failure // StopInstances with Hibernate=true

	metadataTags bool // the own instance's tags are served by IMDS
	fleet        fleet
}

type ec2Failure struct{ code, msg string }

// SetEC2Failure makes every EC2 API call fail with code and msg, as EC2
// would (e.g. "UnauthorizedOperation"). An empty code clears it.
func (s *Server) SetEC2Failure(code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.failure = newFailure(code, msg)
}

// SetHibernationFailure makes StopInstances with Hibernate=true fail with
// code and msg while a plain StopInstances still succeeds, as for an
// instance not configured for hibernation:
//
//	s.SetHibernationFailure(awstest.CodeUnsupportedHibernation,
//		"The instance can't be hibernated because it was not configured at launch for hibernation: "+s.InstanceID)
//
// An empty code clears it.
func (s *Server) SetHibernationFailure(code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.hibFailure = newFailure(code, msg)
}

func newFailure(code, msg string) *ec2Failure {
	if code == "" {
		return nil
	}
	return &ec2Failure{code, msg}
}

// InstanceState reports the state of the server's own instance
// (s.InstanceID: "running", "stopping", ...) and whether its last stop was
// a hibernation.
func (s *Server) InstanceState() (state string, hibernated bool) {
	in, _ := s.Instance(s.InstanceID)
	return in.State, in.Hibernated
}

func (s *Server) registerEC2() {
	s.initFleet()
	s.handlers["ec2/StopInstances"] = s.stopInstances
	s.handlers["ec2/StartInstances"] = s.startInstances
	s.handlers["ec2/DescribeInstances"] = s.describeInstances
	s.handlers["ec2/CreateTags"] = s.createTags
	s.handlers["ec2/DeleteTags"] = s.deleteTags
	s.registerClientVPN()
}

func ec2Status(code string) int {
	switch code {
	case "AuthFailure", "UnauthorizedOperation", "Blocked":
		return http.StatusForbidden
	case "DryRunOperation":
		return http.StatusPreconditionFailed
	case "InternalError":
		return http.StatusInternalServerError
	case "RequestLimitExceeded", "Unavailable", "ServiceUnavailable":
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func ec2Error(r *Request, f ec2Failure) Response {
	return ErrorResponse(r, ec2Status(f.code), f.code, f.msg)
}

// stopInstances is EC2 StopInstances for instances of the fleet.
// Parameters: InstanceId.N, Hibernate, Force, DryRun, SkipOsShutdown. A
// running instance goes to stopping (stopped after Transitions.Stopping);
// stopping and stopped ones are left as they are; the call fails as a
// whole with IncorrectInstanceState if any instance is pending, shutting
// down or terminated.
func (s *Server) stopInstances(r *Request) Response {
	hibernate, err := boolParam(r, "Hibernate")
	if err != nil {
		return ec2Error(r, ec2Failure{"InvalidParameterValue", err.Error()})
	}
	return s.instanceCall(r, "InstanceId", func(ids []string, dryRun bool, now time.Time) Response {
		if f := s.ec2.hibFailure; hibernate && f != nil {
			return ec2Error(r, *f)
		}
		return s.changeStatesLocked(r, ids, dryRun, stateChange{
			verb:   "stopped",
			refuse: []string{InstancePending, InstanceShuttingDown, InstanceTerminated},
			from:   InstanceRunning, to: InstanceStopping, now: now,
			enter: func(fi *fleetInstance) { fi.setStopReason(now, hibernate) },
		})
	})
}

// maxResults reads a Describe action's MaxResults, which must lie in
// [lo, hi]; 0 means it is absent.
func maxResults(r *Request, lo, hi int) (int, *ec2Failure) {
	v := r.Params.Get("MaxResults")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, &ec2Failure{"InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter maxResults is invalid. Expecting an integer.", v)}
	case n < lo:
		// The message EC2's Describe actions send for too small a page.
		return 0, &ec2Failure{"InvalidParameterValue", fmt.Sprintf("Value ( %d ) for parameter maxResults is invalid. Expecting a value greater than %d.", n, lo)}
	case n > hi:
		return 0, &ec2Failure{"InvalidParameterValue", fmt.Sprintf("Value ( %d ) for parameter maxResults is invalid. Expecting a value less than %d.", n, hi)}
	}
	return n, nil
}

// indexedParams returns a Query list: name.1, name.2, ... until a gap.
func indexedParams(r *Request, name string) []string {
	var out []string
	for i := 1; ; i++ {
		k := name + "." + strconv.Itoa(i)
		if !r.Params.Has(k) {
			return out
		}
		out = append(out, r.Params.Get(k))
	}
}

func boolParam(r *Request, name string) (bool, error) {
	v := r.Params.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil || (v != "true" && v != "false") {
		return false, fmt.Errorf("value (%s) for parameter %s is invalid, expected true or false", v, name)
	}
	return b, nil
}
