package awstest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
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

// Instance states with their EC2 codes.
const (
	stateRunning  = "running"
	stateStopping = "stopping"
)

var stateCodes = map[string]int{"pending": 0, stateRunning: 16, "shutting-down": 32, "terminated": 48, stateStopping: 64, "stopped": 80}

type ec2State struct {
	state      string
	hibernated bool
	failure    *ec2Failure // every EC2 call
	hibFailure *ec2Failure // StopInstances with Hibernate=true

	tags         map[string]string // the instance's tags
	metadataTags bool              // tags are served by IMDS
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

// InstanceState reports the instance's state ("running", "stopping") and
// whether its last stop was a hibernation.
func (s *Server) InstanceState() (state string, hibernated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ec2.state, s.ec2.hibernated
}

func (s *Server) registerEC2() {
	s.handlers["ec2/StopInstances"] = s.stopInstances
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

// stopInstances is EC2 StopInstances for the one instance the server knows.
// Parameters: InstanceId.N, Hibernate, Force, DryRun, SkipOsShutdown.
func (s *Server) stopInstances(r *Request) Response {
	ids := indexedParams(r, "InstanceId")
	if len(ids) == 0 {
		return ec2Error(r, ec2Failure{"MissingParameter", "The request must contain the parameter InstanceId"})
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") {
			return ec2Error(r, ec2Failure{"InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: %q", id)})
		}
		if id != s.InstanceID {
			return ec2Error(r, ec2Failure{"InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id)})
		}
	}
	hibernate, err := boolParam(r, "Hibernate")
	if err != nil {
		return ec2Error(r, ec2Failure{"InvalidParameterValue", err.Error()})
	}
	dryRun, err := boolParam(r, "DryRun")
	if err != nil {
		return ec2Error(r, ec2Failure{"InvalidParameterValue", err.Error()})
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.ec2.failure; f != nil {
		return ec2Error(r, *f)
	}
	if f := s.ec2.hibFailure; hibernate && f != nil {
		return ec2Error(r, *f)
	}
	if dryRun {
		return ec2Error(r, ec2Failure{"DryRunOperation", "Request would have succeeded, but DryRun flag is set."})
	}
	prev := s.ec2.state
	s.ec2.state, s.ec2.hibernated = stateStopping, hibernate

	var items strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&items, `<item><instanceId>%s</instanceId>`+
			`<currentState><code>%d</code><name>%s</name></currentState>`+
			`<previousState><code>%d</code><name>%s</name></previousState></item>`,
			xmlText(id), stateCodes[stateStopping], stateStopping, stateCodes[prev], prev)
	}
	return QueryResponse(r, EC2Namespace, "<instancesSet>"+items.String()+"</instancesSet>")
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
