package awstest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// CloudWatch as current versions of the AWS SDK for Go v2 speak it
// (captured from service/cloudwatch v1.75.5 with smithy-go v1.28.8):
// Smithy RPC v2 CBOR; older versions used AWS Query, which is not served.
//
//	POST /service/GraniteServiceVersion20100801/operation/PutMetricData
//	Smithy-Protocol: rpc-v2-cbor
//	Content-Type: application/cbor
//	Accept: application/cbor
//	X-Amzn-Query-Mode: true
//	Content-Encoding: gzip          (PutMetricData bodies of 10 KiB or more)
//	Authorization: AWS4-HMAC-SHA256 Credential=.../REGION/monitoring/aws4_request, ...
//
// The body is a CBOR map named after the operation's input members
// (indefinite-length maps and arrays as the SDK writes them; timestamps as
// tag 1 around epoch seconds). Replies are CBOR too; errors carry
// {"__type": "com.amazonaws.cloudwatch#InvalidParameterValueException",
// "message": ...} and, because the service is awsQueryCompatible, the
// Query-era code in "X-Amzn-Query-Error: InvalidParameterValue;Sender",
// which the SDK reports as the error code.

// CloudWatch names on the wire.
const (
	// CloudWatchService is the SigV4 signing name, the service of a
	// recorded Request and the first argument of Calls and Handle.
	CloudWatchService = "monitoring"
	// CloudWatchServiceShape is the {Service} path segment of RPC v2 CBOR.
	CloudWatchServiceShape = "GraniteServiceVersion20100801"
	cwNamespace            = "com.amazonaws.cloudwatch#"
)

// CloudWatch limits the fake enforces, from the PutMetricData and
// PutMetricAlarm API references.
const (
	MaxMetricDataPerCall = 1000
	MaxValuesPerDatum    = 150
	MaxDimensions        = 30
	MaxPutMetricDataSize = 1 << 20
	// MaxDatapointAge and MaxDatapointLead bound a datapoint's timestamp
	// against the server's clock.
	MaxDatapointAge  = 14 * 24 * time.Hour
	MaxDatapointLead = 2 * time.Hour
)

// CloudWatch error codes (the X-Amzn-Query-Error codes the SDK reports).
const (
	CodeInvalidParameterValue       = "InvalidParameterValue"
	CodeInvalidParameterCombination = "InvalidParameterCombination"
	CodeMissingParameter            = "MissingParameter"
	CodeInternalServiceError        = "InternalServiceError"
	CodeResourceNotFound            = "ResourceNotFound"
	CodeLimitExceeded               = "LimitExceeded"
	CodeValidationError             = "ValidationError"
	CodeThrottling                  = "Throttling"
	CodeServiceUnavailable          = "ServiceUnavailable"
	CodeAccessDenied                = "AccessDenied"
)

// rpcv2Errors maps an error code to the shape id sent in __type, its fault
// and default HTTP status. Modelled CloudWatch errors use their own shapes;
// the others are the generic ones of AWS's service framework.
var rpcv2Errors = map[string]struct {
	shape  string
	status int
}{
	CodeInvalidParameterValue:       {cwNamespace + "InvalidParameterValueException", 400},
	CodeInvalidParameterCombination: {cwNamespace + "InvalidParameterCombinationException", 400},
	CodeMissingParameter:            {cwNamespace + "MissingRequiredParameterException", 400},
	CodeInternalServiceError:        {cwNamespace + "InternalServiceFault", 500},
	CodeResourceNotFound:            {cwNamespace + "ResourceNotFound", 404},
	CodeLimitExceeded:               {cwNamespace + "LimitExceededFault", 400},
	CodeValidationError:             {cwNamespace + "ValidationException", 400},
	"InvalidFormat":                 {cwNamespace + "InvalidFormatFault", 400},
	"InvalidNextToken":              {cwNamespace + "InvalidNextToken", 400},
	CodeThrottling:                  {"com.amazon.coral.availability#ThrottlingException", 400},
	CodeServiceUnavailable:          {"com.amazon.coral.availability#ServiceUnavailableException", 503},
	CodeAccessDenied:                {"com.amazon.coral.service#AccessDeniedException", 403},
}

// RPCv2Error is an RPC v2 CBOR error reply. status 0 means the code's usual
// status (400 for unknown codes).
func RPCv2Error(status int, code, msg string) Response {
	shape := "com.amazon.coral.service#" + code
	if e, ok := rpcv2Errors[code]; ok {
		shape = e.shape
		if status == 0 {
			status = e.status
		}
	}
	if status == 0 {
		status = http.StatusBadRequest
	}
	fault := "Sender"
	if status >= 500 {
		fault = "Receiver"
	}
	h := http.Header{}
	h.Set("Smithy-Protocol", "rpc-v2-cbor")
	h.Set("X-Amzn-Query-Error", code+";"+fault)
	h.Set("X-Amzn-Requestid", newRequestID())
	return Response{
		Status: status, ContentType: "application/cbor", Header: h, ErrorCode: code,
		Body: mustCBOR(map[string]any{"__type": shape, "message": msg}),
	}
}

// RPCv2Response is a successful RPC v2 CBOR reply; out nil means an empty
// body (operations whose output is Unit).
func RPCv2Response(out any) Response {
	h := http.Header{}
	h.Set("Smithy-Protocol", "rpc-v2-cbor")
	h.Set("X-Amzn-Requestid", newRequestID())
	if out == nil {
		return Response{Header: h}
	}
	return Response{ContentType: "application/cbor", Header: h, Body: mustCBOR(out)}
}

// DecodeCBOR decodes r's payload into v, an RPC v2 CBOR input: a struct
// with the members' names as fields, or a map[string]any.
func (r *Request) DecodeCBOR(v any) error {
	if len(r.Payload) == 0 {
		return nil
	}
	return cborDec.Unmarshal(r.Payload, v)
}

var (
	cborEnc = func() cbor.EncMode {
		m, err := cbor.EncOptions{Time: cbor.TimeUnixMicro, TimeTag: cbor.EncTagRequired}.EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	cborDec = func() cbor.DecMode {
		// Maps inside untyped values decode as map[string]any, so that a
		// decoded payload can be compared or turned into JSON.
		m, err := cbor.DecOptions{DefaultMapType: reflect.TypeFor[map[string]any]()}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

func mustCBOR(v any) []byte {
	b, err := cborEnc.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("awstest: encode CBOR: %v", err))
	}
	return b
}

func decodeContent(enc string, body []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("decode gzip body: %w", err)
		}
		p, err := io.ReadAll(io.LimitReader(zr, 16<<20))
		if err != nil {
			return nil, fmt.Errorf("decode gzip body: %w", err)
		}
		return p, nil
	case "identity", "":
		return body, nil
	}
	return nil, fmt.Errorf("unsupported Content-Encoding %q", enc)
}

// Dimension is a CloudWatch dimension.
type Dimension struct {
	Name  string `cbor:"Name,omitempty"`
	Value string `cbor:"Value,omitempty"`
}

// StatisticSet is a datum's pre-aggregated statistics.
type StatisticSet struct {
	SampleCount, Sum, Minimum, Maximum float64
}

// MetricDatum is one element of PutMetricData's MetricData as the client
// sent it.
type MetricDatum struct {
	MetricName        string
	Dimensions        []Dimension
	Timestamp         *time.Time
	Value             *float64
	StatisticValues   *StatisticSet
	Values            []float64
	Counts            []float64
	Unit              string
	StorageResolution *int
}

// Datapoint is one datum CloudWatch accepted, with where it came from.
type Datapoint struct {
	Namespace string
	MetricDatum
	// Time is the datum's Timestamp, or the time it was received when it
	// had none (as CloudWatch does).
	Time     time.Time
	Received time.Time
	// Call numbers the PutMetricData calls that were accepted, from 1.
	Call int
}

// Dimension returns the value of the named dimension, or "".
func (d Datapoint) Dimension(name string) string {
	for _, dim := range d.Dimensions {
		if dim.Name == name {
			return dim.Value
		}
	}
	return ""
}

// Metric is a metric in a MetricStat.
type Metric struct {
	Namespace  string      `cbor:"Namespace,omitempty"`
	MetricName string      `cbor:"MetricName,omitempty"`
	Dimensions []Dimension `cbor:"Dimensions,omitempty"`
}

// MetricStat is a metric, period and statistic in a metric-math alarm.
type MetricStat struct {
	Metric Metric `cbor:"Metric"`
	Period int    `cbor:"Period,omitempty"`
	Stat   string `cbor:"Stat,omitempty"`
	Unit   string `cbor:"Unit,omitempty"`
}

// MetricDataQuery is one element of an alarm's Metrics.
type MetricDataQuery struct {
	ID         string      `cbor:"Id,omitempty"`
	MetricStat *MetricStat `cbor:"MetricStat,omitempty"`
	Expression string      `cbor:"Expression,omitempty"`
	Label      string      `cbor:"Label,omitempty"`
	ReturnData *bool       `cbor:"ReturnData,omitempty"`
	Period     *int        `cbor:"Period,omitempty"`
	AccountID  string      `cbor:"AccountId,omitempty"`
}

// Tag is a resource tag.
type Tag struct{ Key, Value string }

// AlarmInput is the input of PutMetricAlarm as the client sent it.
type AlarmInput struct {
	AlarmName                        string
	AlarmDescription                 string
	ActionsEnabled                   *bool
	OKActions                        []string
	AlarmActions                     []string
	InsufficientDataActions          []string
	MetricName                       string
	Namespace                        string
	Statistic                        string
	ExtendedStatistic                string
	Dimensions                       []Dimension
	Period                           *int
	Unit                             string
	EvaluationPeriods                *int
	DatapointsToAlarm                *int
	Threshold                        *float64
	ComparisonOperator               string
	TreatMissingData                 string
	EvaluateLowSampleCountPercentile string
	Metrics                          []MetricDataQuery
	ThresholdMetricID                string `cbor:"ThresholdMetricId"`
	Tags                             []Tag
}

// Alarm is a metric alarm the server holds.
type Alarm struct {
	AlarmInput
	AlarmArn                           string
	StateValue                         string
	StateReason                        string
	StateReasonData                    string
	StateUpdatedTimestamp              time.Time
	AlarmConfigurationUpdatedTimestamp time.Time
	// History is every state change, oldest first.
	History []AlarmStateChange
}

// AlarmStateChange is one change of an alarm's state.
type AlarmStateChange struct {
	Time     time.Time
	From, To string
	Reason   string
	// Actions are the actions CloudWatch would have run for the change
	// (none while ActionsEnabled is false).
	Actions []string
}

// Alarm states.
const (
	StateOK               = "OK"
	StateAlarm            = "ALARM"
	StateInsufficientData = "INSUFFICIENT_DATA"
)

type cwState struct {
	datapoints []Datapoint
	calls      int // accepted PutMetricData calls
	alarms     map[string]*Alarm
	failCode   string
	failStatus int
	failLeft   int // < 0: until cleared
	down       bool
}

func (s *Server) registerCloudWatch() {
	s.cw.alarms = make(map[string]*Alarm)
	for op, h := range map[string]func(*Request) Response{
		"PutMetricData":  s.putMetricData,
		"PutMetricAlarm": s.putMetricAlarm,
		"DescribeAlarms": s.describeAlarms,
		"SetAlarmState":  s.setAlarmState,
	} {
		s.handlers[CloudWatchService+"/"+op] = s.cloudWatchOp(h)
	}
}

// SetCloudWatchFailure makes the next n CloudWatch API calls (any
// operation, after the signature check) fail with code, e.g. Throttling,
// InternalServiceError, ServiceUnavailable, AccessDenied,
// InvalidParameterValue. status 0 means the code's usual status; n < 0
// fails every call until the failure is cleared with n == 0 or code "".
func (s *Server) SetCloudWatchFailure(code string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == "" || n == 0 {
		s.cw.failCode, s.cw.failStatus, s.cw.failLeft = "", 0, 0
		return
	}
	s.cw.failCode, s.cw.failStatus, s.cw.failLeft = code, status, n
}

// SetCloudWatchOutage takes CloudWatch off the network (down) or puts it
// back: while down, every CloudWatch request has its connection closed
// without a reply, as when the path to the endpoint is cut, and is
// recorded with Status 0 and ErrorCode "ConnectionClosed". IMDS and EC2
// keep answering.
func (s *Server) SetCloudWatchOutage(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cw.down = down
}

// Datapoints returns every datum accepted so far, in the order received.
func (s *Server) Datapoints() []Datapoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cw.datapoints)
}

// Alarm returns the named alarm.
func (s *Server) Alarm(name string) (Alarm, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.cw.alarms[name]
	if !ok {
		return Alarm{}, false
	}
	c := *a
	c.History = slices.Clone(a.History)
	return c, true
}

// SetAlarmState moves an alarm to state as CloudWatch's own evaluation
// would, recording the change and its actions, so tests can put an alarm
// in ALARM without going through the API. It reports whether the alarm
// exists.
func (s *Server) SetAlarmState(name, state, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.cw.alarms[name]
	if ok {
		s.transition(a, state, reason, "")
	}
	return ok
}

func (s *Server) cloudWatchDown(hr *http.Request) bool {
	if hr.Header.Get("Smithy-Protocol") == "" || !strings.Contains(hr.URL.Path, "/"+CloudWatchServiceShape+"/") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cw.down
}

// dropConnection records r and closes its connection without a reply.
func (s *Server) dropConnection(w http.ResponseWriter, r *Request) {
	r.Protocol, r.Service = ProtocolRPCv2CBOR, CloudWatchService
	r.Action = r.Path[strings.LastIndexByte(r.Path, '/')+1:]
	r.ErrorCode = "ConnectionClosed"
	s.mu.Lock()
	s.requests = append(s.requests, *r)
	s.mu.Unlock()
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// cloudWatchOp checks what every CloudWatch operation shares, and the
// injected failure, before h.
func (s *Server) cloudWatchOp(h func(*Request) Response) Handler {
	return func(r *Request) Response {
		if r.Protocol != ProtocolRPCv2CBOR {
			// AWS Query for CloudWatch (SDKs before the switch) is not
			// spoken here: fail loudly rather than half-answer.
			return ErrorResponse(r, http.StatusBadRequest, "UnknownOperationException", "awstest: CloudWatch speaks RPC v2 CBOR only")
		}
		if !strings.Contains(r.Path, "/service/"+CloudWatchServiceShape+"/operation/") {
			return RPCv2Error(http.StatusNotFound, "UnknownOperationException", "unknown service in "+r.Path)
		}
		if len(r.Payload) > 0 && r.Header.Get("Content-Type") != "application/cbor" {
			return RPCv2Error(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "Content-Type must be application/cbor")
		}
		s.mu.Lock()
		if s.cw.failLeft != 0 {
			code, status := s.cw.failCode, s.cw.failStatus
			if s.cw.failLeft > 0 {
				s.cw.failLeft--
			}
			s.mu.Unlock()
			return RPCv2Error(status, code, "awstest: injected failure")
		}
		s.mu.Unlock()
		return h(r)
	}
}

func invalid(format string, a ...any) Response {
	return RPCv2Error(0, CodeInvalidParameterValue, fmt.Sprintf(format, a...))
}

func missing(name string) Response {
	return RPCv2Error(0, CodeMissingParameter, fmt.Sprintf("The parameter %s is required.", name))
}

// putMetricData validates the whole request as CloudWatch does and stores
// its data only when all of it is valid.
func (s *Server) putMetricData(r *Request) Response {
	var in struct {
		Namespace  string
		MetricData []MetricDatum
	}
	if err := r.DecodeCBOR(&in); err != nil {
		return RPCv2Error(0, "SerializationException", "decode PutMetricData: "+err.Error())
	}
	if len(r.Body) > MaxPutMetricDataSize {
		return RPCv2Error(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request size exceeded 1048576 bytes")
	}
	switch {
	case in.Namespace == "":
		return missing("Namespace")
	case len(in.Namespace) > 255:
		return invalid("The parameter Namespace must be no longer than 255 characters.")
	case strings.HasPrefix(in.Namespace, "AWS/"):
		return invalid("The value %s for parameter Namespace is invalid.", in.Namespace)
	case len(in.MetricData) == 0:
		return missing("MetricData")
	case len(in.MetricData) > MaxMetricDataPerCall:
		return invalid("The collection MetricData must not have a size greater than %d.", MaxMetricDataPerCall)
	}
	now := s.clock.Now()
	for i, d := range in.MetricData {
		if resp, bad := checkDatum(i+1, d, now); bad {
			return resp
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cw.calls++
	for _, d := range in.MetricData {
		ts := r.Time
		if d.Timestamp != nil {
			ts = *d.Timestamp
		}
		s.cw.datapoints = append(s.cw.datapoints, Datapoint{Namespace: in.Namespace, MetricDatum: d, Time: ts, Received: r.Time, Call: s.cw.calls})
	}
	return RPCv2Response(nil)
}

var validUnits = map[string]bool{
	"Seconds": true, "Microseconds": true, "Milliseconds": true, "Bytes": true, "Kilobytes": true,
	"Megabytes": true, "Gigabytes": true, "Terabytes": true, "Bits": true, "Kilobits": true,
	"Megabits": true, "Gigabits": true, "Terabits": true, "Percent": true, "Count": true,
	"Bytes/Second": true, "Kilobytes/Second": true, "Megabytes/Second": true, "Gigabytes/Second": true,
	"Terabytes/Second": true, "Bits/Second": true, "Kilobits/Second": true, "Megabits/Second": true,
	"Gigabits/Second": true, "Terabits/Second": true, "Count/Second": true, "None": true,
}

func checkDatum(n int, d MetricDatum, now time.Time) (Response, bool) {
	member := fmt.Sprintf("MetricData.member.%d", n)
	if d.MetricName == "" {
		return missing(member + ".MetricName"), true
	}
	if len(d.MetricName) > 255 {
		return invalid("The parameter %s.MetricName must be no longer than 255 characters.", member), true
	}
	if len(d.Dimensions) > MaxDimensions {
		return invalid("The collection %s.Dimensions must not have a size greater than %d.", member, MaxDimensions), true
	}
	seen := map[string]bool{}
	for j, dim := range d.Dimensions {
		if dim.Name == "" || dim.Value == "" {
			return missing(fmt.Sprintf("%s.Dimensions.member.%d.Name/Value", member, j+1)), true
		}
		if seen[dim.Name] {
			return RPCv2Error(0, CodeInvalidParameterCombination, fmt.Sprintf("No metric may have duplicate dimension names (%s).", dim.Name)), true
		}
		seen[dim.Name] = true
	}
	forms := 0
	if d.Value != nil {
		forms++
	}
	if d.StatisticValues != nil {
		forms++
	}
	if d.Values != nil {
		forms++
	}
	if forms != 1 {
		return RPCv2Error(0, CodeInvalidParameterCombination,
			fmt.Sprintf("The parameters %s.Value, %[1]s.StatisticValues and %[1]s.Values are mutually exclusive and one of them must be specified.", member)), true
	}
	values := d.Values
	if d.Value != nil {
		values = []float64{*d.Value}
	}
	if len(values) > MaxValuesPerDatum {
		return invalid("The collection %s.Values must not have a size greater than %d.", member, MaxValuesPerDatum), true
	}
	if d.Counts != nil && len(d.Counts) != len(d.Values) {
		return RPCv2Error(0, CodeInvalidParameterCombination, fmt.Sprintf("The parameters %s.Values and %[1]s.Counts must be of the same size.", member)), true
	}
	for _, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > math.Pow(2, 360) {
			return invalid("The value %s for parameter %s.Value is invalid.", strconv.FormatFloat(v, 'g', -1, 64), member), true
		}
	}
	if d.Unit != "" && !validUnits[d.Unit] {
		return invalid("The value %s for parameter %s.Unit is invalid.", d.Unit, member), true
	}
	if sr := d.StorageResolution; sr != nil && *sr != 1 && *sr != 60 {
		return invalid("The value %d for parameter %s.StorageResolution is invalid.", *sr, member), true
	}
	if ts := d.Timestamp; ts != nil {
		if now.Sub(*ts) > MaxDatapointAge {
			return invalid("The parameter %s.Timestamp must specify a time within the past two weeks.", member), true
		}
		if ts.Sub(now) > MaxDatapointLead {
			return invalid("The parameter %s.Timestamp must specify a time no more than two hours in the future.", member), true
		}
	}
	return Response{}, false
}

// putMetricAlarm creates or replaces an alarm. A new alarm starts in
// INSUFFICIENT_DATA; an updated one keeps its state (its configuration is
// replaced whole, and Tags are ignored), as the API reference says.
func (s *Server) putMetricAlarm(r *Request) Response {
	var in AlarmInput
	if err := r.DecodeCBOR(&in); err != nil {
		return RPCv2Error(0, "SerializationException", "decode PutMetricAlarm: "+err.Error())
	}
	if resp, bad := s.checkAlarm(in); bad {
		return resp
	}
	if in.ActionsEnabled == nil {
		t := true
		in.ActionsEnabled = &t
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.cw.alarms[in.AlarmName]
	if !ok {
		a = &Alarm{
			AlarmArn:              fmt.Sprintf("arn:aws:cloudwatch:%s:%s:alarm:%s", s.Region, s.AccountID, in.AlarmName),
			StateValue:            StateInsufficientData,
			StateReason:           "Unchecked: Initial alarm creation",
			StateUpdatedTimestamp: now,
		}
		s.cw.alarms[in.AlarmName] = a
	} else {
		in.Tags = a.Tags
	}
	a.AlarmInput = in
	a.AlarmConfigurationUpdatedTimestamp = now
	return RPCv2Response(nil)
}

var comparisonOperators = []string{
	"GreaterThanOrEqualToThreshold", "GreaterThanThreshold", "LessThanThreshold", "LessThanOrEqualToThreshold",
	"LessThanLowerOrGreaterThanUpperThreshold", "LessThanLowerThreshold", "GreaterThanUpperThreshold",
}

var statistics = []string{"SampleCount", "Average", "Sum", "Minimum", "Maximum"}

func (s *Server) checkAlarm(in AlarmInput) (Response, bool) {
	switch {
	case in.AlarmName == "":
		return missing("AlarmName"), true
	case len(in.AlarmName) > 255:
		return invalid("The parameter AlarmName must be no longer than 255 characters."), true
	case in.EvaluationPeriods == nil:
		return missing("EvaluationPeriods"), true
	case *in.EvaluationPeriods < 1:
		return invalid("The parameter EvaluationPeriods must be greater than or equal to 1."), true
	case in.ComparisonOperator == "":
		return missing("ComparisonOperator"), true
	case !slices.Contains(comparisonOperators, in.ComparisonOperator):
		return invalid("The value %s for parameter ComparisonOperator is invalid.", in.ComparisonOperator), true
	case in.DatapointsToAlarm != nil && (*in.DatapointsToAlarm < 1 || *in.DatapointsToAlarm > *in.EvaluationPeriods):
		return invalid("DatapointsToAlarm must be between 1 and EvaluationPeriods (%d).", *in.EvaluationPeriods), true
	case in.TreatMissingData != "" && !slices.Contains([]string{"breaching", "notBreaching", "ignore", "missing"}, in.TreatMissingData):
		return invalid("The value %s for parameter TreatMissingData is invalid.", in.TreatMissingData), true
	case in.Threshold == nil && in.ThresholdMetricID == "":
		return missing("Threshold"), true
	}
	period := 0
	switch {
	case in.MetricName != "" && len(in.Metrics) > 0:
		return RPCv2Error(0, CodeInvalidParameterCombination, "MetricName and Metrics are mutually exclusive."), true
	case in.MetricName != "":
		switch {
		case in.Namespace == "":
			return missing("Namespace"), true
		case in.Period == nil:
			return missing("Period"), true
		case (in.Statistic == "") == (in.ExtendedStatistic == ""):
			return RPCv2Error(0, CodeInvalidParameterCombination, "Exactly one of Statistic and ExtendedStatistic must be specified."), true
		case in.Statistic != "" && !slices.Contains(statistics, in.Statistic):
			return invalid("The value %s for parameter Statistic is invalid.", in.Statistic), true
		}
		period = *in.Period
	case len(in.Metrics) > 0:
		returned := 0
		for _, q := range in.Metrics {
			if q.ID == "" {
				return missing("Metrics.member.N.Id"), true
			}
			if (q.MetricStat == nil) == (q.Expression == "") {
				return RPCv2Error(0, CodeValidationError, "Exactly one of MetricStat and Expression must be specified in "+q.ID+"."), true
			}
			if q.ReturnData == nil || *q.ReturnData {
				returned++
				if q.MetricStat != nil {
					period = q.MetricStat.Period
				} else if q.Period != nil {
					period = *q.Period
				}
			}
			if q.MetricStat != nil && period == 0 {
				period = q.MetricStat.Period
			}
		}
		if returned != 1 {
			return RPCv2Error(0, CodeValidationError, "Exactly one element of the metrics list should return data."), true
		}
	default:
		return RPCv2Error(0, CodeValidationError, "Either MetricName or Metrics must be specified."), true
	}
	if period != 10 && period != 20 && period != 30 && (period < 60 || period%60 != 0) {
		return invalid("The parameter Period must be 10, 20, 30 or a multiple of 60."), true
	}
	if limit := 24 * 3600; period < 3600 && period**in.EvaluationPeriods > limit {
		return invalid("The evaluation period multiplied by the period must not exceed one day (86400 seconds)."), true
	}
	for _, list := range [][]string{in.AlarmActions, in.OKActions, in.InsufficientDataActions} {
		if len(list) > 5 {
			return invalid("No more than 5 actions may be specified for each alarm state."), true
		}
		for _, arn := range list {
			if resp, bad := s.checkAction(arn, in); bad {
				return resp, true
			}
		}
	}
	return Response{}, false
}

// checkAction accepts EC2 automate actions and SNS topics in the server's
// region. The user guide says EC2 actions work only on metrics with an
// InstanceId dimension and never on metric math; AWS does not document the
// error it answers, so the fake answers ValidationError for both.
func (s *Server) checkAction(arn string, in AlarmInput) (Response, bool) {
	parts := strings.Split(arn, ":")
	if len(parts) < 6 || parts[0] != "arn" || parts[1] != "aws" {
		return invalid("Invalid arn syntax: %s", arn), true
	}
	if parts[3] != s.Region {
		return RPCv2Error(0, CodeValidationError, fmt.Sprintf("Invalid region %s specified. Only %s is supported.", parts[3], s.Region)), true
	}
	switch parts[2] {
	case "automate":
		if parts[4] != "ec2" || !slices.Contains([]string{"stop", "terminate", "reboot", "recover"}, parts[5]) {
			return invalid("Invalid EC2 action: %s", arn), true
		}
		if len(in.Metrics) > 0 {
			return RPCv2Error(0, CodeValidationError, "EC2 actions are not supported for alarms on metric math expressions."), true
		}
		if !slices.ContainsFunc(in.Dimensions, func(d Dimension) bool { return d.Name == "InstanceId" }) {
			return RPCv2Error(0, CodeValidationError, "EC2 actions are supported only for metrics with an InstanceId dimension."), true
		}
	case "sns":
		if parts[4] == "" || parts[5] == "" {
			return invalid("Invalid SNS topic: %s", arn), true
		}
	case "swf", "ssm", "lambda", "ssm-incidents":
	default:
		return invalid("Invalid alarm action: %s", arn), true
	}
	return Response{}, false
}

// describeAlarms answers for metric alarms by AlarmNames or
// AlarmNamePrefix and StateValue, in name order, with MaxRecords paging.
func (s *Server) describeAlarms(r *Request) Response {
	var in struct {
		AlarmNames      []string
		AlarmNamePrefix string
		StateValue      string
		AlarmTypes      []string
		MaxRecords      *int
		NextToken       string
	}
	if err := r.DecodeCBOR(&in); err != nil {
		return RPCv2Error(0, "SerializationException", "decode DescribeAlarms: "+err.Error())
	}
	switch {
	case len(in.AlarmNames) > 100:
		return invalid("The collection AlarmNames must not have a size greater than 100.")
	case len(in.AlarmNames) > 0 && in.AlarmNamePrefix != "":
		return RPCv2Error(0, CodeInvalidParameterCombination, "AlarmNames and AlarmNamePrefix are mutually exclusive.")
	case in.StateValue != "" && !slices.Contains([]string{StateOK, StateAlarm, StateInsufficientData}, in.StateValue):
		return invalid("The value %s for parameter StateValue is invalid.", in.StateValue)
	case in.MaxRecords != nil && (*in.MaxRecords < 1 || *in.MaxRecords > 100):
		return invalid("The parameter MaxRecords must be between 1 and 100.")
	}
	max := 50
	if in.MaxRecords != nil {
		max = *in.MaxRecords
	}
	start := 0
	if in.NextToken != "" {
		n, err := strconv.Atoi(in.NextToken)
		if err != nil || n < 0 {
			return RPCv2Error(0, "InvalidNextToken", "The service returned an invalid NextToken.")
		}
		start = n
	}
	wantMetric := len(in.AlarmTypes) == 0 || slices.Contains(in.AlarmTypes, "MetricAlarm")

	s.mu.Lock()
	var names []string
	for name, a := range s.cw.alarms {
		switch {
		case !wantMetric:
		case len(in.AlarmNames) > 0 && !slices.Contains(in.AlarmNames, name):
		case !strings.HasPrefix(name, in.AlarmNamePrefix):
		case in.StateValue != "" && a.StateValue != in.StateValue:
		default:
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := map[string]any{}
	alarms := []any{}
	for i := start; i < len(names) && i < start+max; i++ {
		alarms = append(alarms, alarmOutput(s.cw.alarms[names[i]]))
	}
	s.mu.Unlock()
	out["MetricAlarms"] = alarms
	out["CompositeAlarms"] = []any{}
	if start+max < len(names) {
		out["NextToken"] = strconv.Itoa(start + max)
	}
	return RPCv2Response(out)
}

// alarmOutput is a MetricAlarm as DescribeAlarms returns it.
func alarmOutput(a *Alarm) map[string]any {
	m := map[string]any{
		"AlarmName":                          a.AlarmName,
		"AlarmArn":                           a.AlarmArn,
		"AlarmConfigurationUpdatedTimestamp": a.AlarmConfigurationUpdatedTimestamp,
		"ActionsEnabled":                     a.ActionsEnabled == nil || *a.ActionsEnabled,
		"OKActions":                          nonNil(a.OKActions),
		"AlarmActions":                       nonNil(a.AlarmActions),
		"InsufficientDataActions":            nonNil(a.InsufficientDataActions),
		"StateValue":                         a.StateValue,
		"StateReason":                        a.StateReason,
		"StateUpdatedTimestamp":              a.StateUpdatedTimestamp,
		"Dimensions":                         nonNil(a.Dimensions),
		"EvaluationPeriods":                  *a.EvaluationPeriods,
		"ComparisonOperator":                 a.ComparisonOperator,
	}
	if !a.StateUpdatedTimestamp.IsZero() {
		m["StateTransitionedTimestamp"] = a.StateUpdatedTimestamp
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("AlarmDescription", a.AlarmDescription)
	set("StateReasonData", a.StateReasonData)
	set("MetricName", a.MetricName)
	set("Namespace", a.Namespace)
	set("Statistic", a.Statistic)
	set("ExtendedStatistic", a.ExtendedStatistic)
	set("Unit", a.Unit)
	set("ThresholdMetricId", a.ThresholdMetricID)
	set("EvaluateLowSampleCountPercentile", a.EvaluateLowSampleCountPercentile)
	tmd := a.TreatMissingData
	if tmd == "" {
		tmd = "missing"
	}
	m["TreatMissingData"] = tmd
	if a.Period != nil {
		m["Period"] = *a.Period
	}
	if a.DatapointsToAlarm != nil {
		m["DatapointsToAlarm"] = *a.DatapointsToAlarm
	}
	if a.Threshold != nil {
		m["Threshold"] = *a.Threshold
	}
	if len(a.Metrics) > 0 {
		m["Metrics"] = a.Metrics
	}
	return m
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// setAlarmState is SetAlarmState: the alarm takes the state until its next
// evaluation, and the actions for the new state run if it changed.
func (s *Server) setAlarmState(r *Request) Response {
	var in struct {
		AlarmName       string
		StateValue      string
		StateReason     string
		StateReasonData string
	}
	if err := r.DecodeCBOR(&in); err != nil {
		return RPCv2Error(0, "SerializationException", "decode SetAlarmState: "+err.Error())
	}
	switch {
	case in.AlarmName == "":
		return missing("AlarmName")
	case in.StateValue == "":
		return missing("StateValue")
	case !slices.Contains([]string{StateOK, StateAlarm, StateInsufficientData}, in.StateValue):
		return invalid("The value %s for parameter StateValue is invalid.", in.StateValue)
	case in.StateReason == "":
		return missing("StateReason")
	case len(in.StateReason) > 1023:
		return invalid("The parameter StateReason must be no longer than 1023 characters.")
	case in.StateReasonData != "" && !json.Valid([]byte(in.StateReasonData)):
		return invalid("The parameter StateReasonData must be valid JSON.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.cw.alarms[in.AlarmName]
	if !ok {
		return RPCv2Error(0, CodeResourceNotFound, fmt.Sprintf("Alarm %s not found", in.AlarmName))
	}
	s.transition(a, in.StateValue, in.StateReason, in.StateReasonData)
	return RPCv2Response(nil)
}

// transition sets a's state; called with s.mu held.
func (s *Server) transition(a *Alarm, state, reason, data string) {
	now := s.clock.Now()
	from := a.StateValue
	a.StateValue, a.StateReason, a.StateReasonData, a.StateUpdatedTimestamp = state, reason, data, now
	if from == state {
		return
	}
	var actions []string
	if a.ActionsEnabled == nil || *a.ActionsEnabled {
		switch state {
		case StateOK:
			actions = a.OKActions
		case StateAlarm:
			actions = a.AlarmActions
		case StateInsufficientData:
			actions = a.InsufficientDataActions
		}
	}
	a.History = append(a.History, AlarmStateChange{Time: now, From: from, To: state, Reason: reason, Actions: slices.Clone(actions)})
}
