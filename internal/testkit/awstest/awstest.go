// Package awstest is a loopback stand-in for the parts of AWS that connwatch
// talks to, for tests in any package. One httptest server on 127.0.0.1
// serves the EC2 instance metadata service (IMDSv2 only) and AWS API calls,
// speaking the wire protocols the AWS SDK for Go v2 sends: EC2 Query
// (form-encoded POST, XML reply) for EC2, Smithy RPC v2 CBOR for CloudWatch
// (see cloudwatch.go), with routing in place for AWS Query (SNS) and AWS
// JSON (X-Amz-Target) operations that later tests register with Handle.
//
// Every AWS API request must carry a valid Signature Version 4 signature
// made with AccessKeyID and SecretAccessKey, scoped to the server's region;
// the server checks it with its own implementation of the algorithm and
// answers unsigned or badly signed requests the way AWS does. Every request,
// accepted or not, is recorded for assertions.
//
// Env points the SDK's standard settings (AWS_ENDPOINT_URL*,
// AWS_EC2_METADATA_SERVICE_ENDPOINT, static credentials, empty shared config
// files) at the server, so code under test loads its configuration with
// config.LoadDefaultConfig exactly as it does in production and never
// reaches real AWS or the real metadata service.
package awstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// Static test credentials. The secret is the example key from the AWS
// documentation; the server verifies signatures made with it.
const (
	AccessKeyID     = "AKIDEXAMPLE"
	SecretAccessKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

// Defaults for the instance the server pretends to be.
const (
	DefaultInstanceID = "i-0123456789abcdef0"
	DefaultRegion     = "eu-west-1"
	DefaultAccountID  = "123456789012"
)

// Protocol is the wire protocol a request was recognised as.
type Protocol string

// Protocols the router tells apart.
const (
	// ProtocolIMDS is the instance metadata service: plain HTTP under /latest/.
	ProtocolIMDS Protocol = "imds"
	// ProtocolQuery is AWS Query and its EC2 dialect: a form-encoded POST
	// carrying Action and Version, answered in XML.
	ProtocolQuery Protocol = "query"
	// ProtocolRPCv2CBOR is Smithy RPC v2 CBOR: POST
	// /service/{Service}/operation/{Operation} with a Smithy-Protocol:
	// rpc-v2-cbor header and a CBOR body (CloudWatch in current SDKs).
	ProtocolRPCv2CBOR Protocol = "rpc-v2-cbor"
	// ProtocolJSON is AWS JSON 1.0/1.1: POST / with X-Amz-Target:
	// {Service}.{Operation}.
	ProtocolJSON Protocol = "json"
	// ProtocolUnknown is anything else; such requests are answered 400.
	ProtocolUnknown Protocol = "unknown"
)

// Request is one request the server received, as it understood it.
type Request struct {
	Time     time.Time
	Protocol Protocol
	// Service is the signing name from the SigV4 credential scope ("ec2",
	// "sns", "monitoring"), or "imds".
	Service string
	// Action is the operation name ("StopInstances"); for IMDS it is the
	// method and path ("GET /latest/meta-data/instance-id").
	Action string
	Method string
	Path   string
	Header http.Header
	// Params are the decoded form parameters of a Query request
	// (Action, Version, InstanceId.1, Hibernate, ...).
	Params url.Values
	// Body is the request body as it came over the wire (what the
	// signature covers); Payload is the same with any Content-Encoding
	// (gzip, which the SDK uses for CloudWatch PutMetricData) undone: the
	// CBOR document of an RPC v2 request.
	Body    []byte
	Payload []byte
	// Auth is the parsed and verified SigV4 signature of an AWS API request;
	// nil for IMDS and for requests without an Authorization header.
	Auth *Signature

	// Status and ErrorCode are what the server answered.
	Status    int
	ErrorCode string
}

// Handler answers one AWS API operation. It must not keep r.
type Handler func(r *Request) Response

// Response is a handler's answer.
type Response struct {
	Status      int // 0 means 200
	ContentType string
	Header      http.Header
	Body        []byte
	// ErrorCode is recorded on the Request; set by the error constructors.
	ErrorCode string
}

// Option changes a Server made by New.
type Option func(*Server)

// WithInstanceID sets the instance id IMDS reports and EC2 knows.
func WithInstanceID(id string) Option { return func(s *Server) { s.InstanceID = id } }

// WithRegion sets the region IMDS reports and signatures must be scoped to.
func WithRegion(region string) Option { return func(s *Server) { s.Region = region } }

// WithClock sets the clock used for request times and IMDS token expiry.
func WithClock(c clock.Clock) Option { return func(s *Server) { s.clock = c } }

// Server is a running fake. Its exported fields are fixed by New and must
// not be changed afterwards.
type Server struct {
	URL        string // http://127.0.0.1:PORT, no trailing slash
	InstanceID string
	Region     string
	AccountID  string

	clock clock.Clock
	srv   *httptest.Server

	mu       sync.Mutex
	requests []Request
	handlers map[string]Handler // service + "/" + action
	tokens   map[string]time.Time
	latency  time.Duration
	ec2      ec2State
	cw       cwState
}

// New starts a server on 127.0.0.1 and closes it when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		InstanceID: DefaultInstanceID,
		Region:     DefaultRegion,
		AccountID:  DefaultAccountID,
		clock:      clock.Real{},
		handlers:   make(map[string]Handler),
		tokens:     make(map[string]time.Time),
	}
	for _, o := range opts {
		o(s)
	}
	s.registerEC2()
	s.registerCloudWatch()
	// httptest.NewServer listens on 127.0.0.1:0 (or [::1]:0 without IPv4).
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	// Cleanups run last first: the server closes, then the EC2 fleet's
	// timers stop.
	t.Cleanup(s.closeFleet)
	t.Cleanup(s.srv.Close)
	return s
}

// Env points the AWS SDK's standard settings at s for the rest of the test:
// every service endpoint, the IMDS endpoint, static credentials, the region,
// and empty shared config and credentials files. Settings that could send
// the SDK elsewhere (profiles, container and web-identity credentials, FIPS
// and dual-stack endpoints) are cleared. Like t.Setenv it cannot be used in
// parallel tests.
func (s *Server) Env(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	empty := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatalf("awstest: %v", err)
		}
		return p
	}
	set := map[string]string{
		"AWS_ENDPOINT_URL":                  s.URL,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT": s.URL,
		"AWS_ACCESS_KEY_ID":                 AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":             SecretAccessKey,
		"AWS_REGION":                        s.Region,
		"AWS_DEFAULT_REGION":                s.Region,
		"AWS_CONFIG_FILE":                   empty("config"),
		"AWS_SHARED_CREDENTIALS_FILE":       empty("credentials"),
	}
	// Service-specific endpoint variables win over AWS_ENDPOINT_URL, so
	// they are pointed here too rather than left to the caller's shell.
	for _, svc := range []string{"EC2", "SNS", "CLOUDWATCH", "STS", "SSO", "SSO_OIDC"} {
		set["AWS_ENDPOINT_URL_"+svc] = s.URL
	}
	for _, name := range []string{
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
		"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_EC2_METADATA_DISABLED",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_CA_BUNDLE",
		"AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
	} {
		set[name] = ""
	}
	for k, v := range set {
		t.Setenv(k, v)
	}
}

// SetLatency makes every AWS API answer (not IMDS) wait d of real time,
// as a regional endpoint some way off does.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Handle registers h for an AWS API operation, replacing any earlier one.
// service is the SigV4 signing name ("ec2", "sns", "monitoring").
func (s *Server) Handle(service, action string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[service+"/"+action] = h
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Calls returns the recorded requests for one service and action.
func (s *Server) Calls(service, action string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Service == service && r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

func (s *Server) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	body, err := io.ReadAll(io.LimitReader(hr.Body, 8<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r := &Request{
		Time:    s.clock.Now(),
		Method:  hr.Method,
		Path:    hr.URL.Path,
		Header:  hr.Header.Clone(),
		Body:    body,
		Payload: body,
	}
	if s.cloudWatchDown(hr) {
		s.dropConnection(w, r)
		return
	}
	var resp Response
	if strings.HasPrefix(hr.URL.Path, "/latest/") {
		r.Protocol, r.Service, r.Action = ProtocolIMDS, "imds", hr.Method+" "+hr.URL.Path
		resp = s.serveIMDS(hr)
	} else {
		resp = s.serveAPI(hr, r)
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	r.Status, r.ErrorCode = resp.Status, resp.ErrorCode

	s.mu.Lock()
	s.requests = append(s.requests, *r)
	s.mu.Unlock()

	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if resp.ContentType != "" {
		w.Header().Set("Content-Type", resp.ContentType)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// serveAPI recognises the protocol, checks the signature and dispatches.
func (s *Server) serveAPI(hr *http.Request, r *Request) Response {
	r.Protocol, r.Action = classify(hr, r)
	if enc := hr.Header.Get("Content-Encoding"); enc != "" {
		p, err := decodeContent(enc, r.Body)
		if err != nil {
			return ErrorResponse(r, http.StatusBadRequest, "InvalidEncoding", err.Error())
		}
		r.Payload = p
	}
	if r.Protocol == ProtocolUnknown {
		return Response{Status: http.StatusBadRequest, ContentType: "text/plain",
			Body: []byte("awstest: unrecognised request\n"), ErrorCode: "UnknownOperationException"}
	}

	auth, authErr := verifySigV4(hr, r.Body, s.Region)
	r.Auth = auth
	if auth != nil {
		r.Service = auth.Service
	}
	if r.Service == "" && r.Protocol == ProtocolQuery {
		r.Service = queryVersions[r.Params.Get("Version")]
	}
	if authErr != nil {
		return ErrorResponse(r, authErr.status, authErr.code, authErr.msg)
	}
	if r.Action == "" {
		return ErrorResponse(r, http.StatusBadRequest, "MissingAction", "The request must contain the parameter Action")
	}

	s.mu.Lock()
	latency := s.latency
	s.mu.Unlock()
	if latency > 0 { // real time: the client's own timeouts run on it
		select {
		case <-time.After(latency):
		case <-hr.Context().Done(): // the client left, or the server closes
		}
	}
	if resp, ok := s.injectedFailure(r); ok {
		return resp
	}
	s.mu.Lock()
	h := s.handlers[r.Service+"/"+r.Action]
	s.mu.Unlock()
	if h == nil {
		return ErrorResponse(r, http.StatusBadRequest, "InvalidAction",
			fmt.Sprintf("The action %s is not valid for this web service.", r.Action))
	}
	return h(r)
}

// queryVersions maps the Version of a Query request to its service, used
// only to shape error replies to requests without a credential scope.
var queryVersions = map[string]string{
	"2016-11-15": "ec2",
	"2010-03-31": "sns",
	"2010-08-01": "monitoring",
}

// classify tells the protocol and operation name from the request's shape.
func classify(hr *http.Request, r *Request) (Protocol, string) {
	ct := hr.Header.Get("Content-Type")
	switch {
	case hr.Header.Get("Smithy-Protocol") == "rpc-v2-cbor":
		// /service/{ServiceName}/operation/{OperationName}
		parts := strings.Split(strings.Trim(hr.URL.Path, "/"), "/")
		if len(parts) >= 4 && parts[len(parts)-4] == "service" && parts[len(parts)-2] == "operation" {
			return ProtocolRPCv2CBOR, parts[len(parts)-1]
		}
		return ProtocolUnknown, ""
	case hr.Header.Get("X-Amz-Target") != "":
		target := hr.Header.Get("X-Amz-Target")
		return ProtocolJSON, target[strings.LastIndexByte(target, '.')+1:]
	case hr.Method == http.MethodPost && strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
		params, err := url.ParseQuery(string(r.Body))
		if err != nil {
			return ProtocolUnknown, ""
		}
		r.Params = params
		return ProtocolQuery, params.Get("Action")
	}
	return ProtocolUnknown, ""
}

// ErrorResponse builds an AWS error reply in r's protocol: the EC2 Query
// form (Response/Errors/Error) for ec2, the AWS Query form
// (ErrorResponse/Error) for other Query services, for RPC v2 CBOR a CBOR
// body {"__type": shape id, "message": msg} with the awsQueryCompatible
// X-Amzn-Query-Error header (see RPCv2Error), and for JSON a minimal reply
// carrying the code in X-Amzn-ErrorType.
func ErrorResponse(r *Request, status int, code, msg string) Response {
	reqID := newRequestID()
	switch {
	case r.Protocol == ProtocolRPCv2CBOR:
		return RPCv2Error(status, code, msg)
	case r.Protocol == ProtocolQuery && r.Service == "ec2":
		return Response{
			Status: status, ContentType: "text/xml;charset=UTF-8", ErrorCode: code,
			Body: fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
				`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
				xmlText(code), xmlText(msg), reqID),
		}
	case r.Protocol == ProtocolQuery:
		typ := "Sender"
		if status >= 500 {
			typ = "Receiver"
		}
		return Response{
			Status: status, ContentType: "text/xml", ErrorCode: code,
			Body: fmt.Appendf(nil, `<ErrorResponse xmlns="https://%s.amazonaws.com/doc/%s/">`+
				`<Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
				r.Service, r.Params.Get("Version"), typ, xmlText(code), xmlText(msg), reqID),
		}
	default:
		h := http.Header{}
		h.Set("X-Amzn-Errortype", code)
		h.Set("X-Amzn-Requestid", reqID)
		return Response{Status: status, ContentType: "text/plain", Header: h, ErrorCode: code,
			Body: []byte(code + ": " + msg + "\n")}
	}
}

// QueryResponse wraps the inner XML of a successful Query reply in its
// <ActionResponse> element, with the namespace and request id AWS sends.
func QueryResponse(r *Request, namespace, inner string) Response {
	reqID := newRequestID()
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	if r.Service == "ec2" {
		fmt.Fprintf(&b, `<%sResponse xmlns="%s"><requestId>%s</requestId>%s</%sResponse>`,
			r.Action, namespace, reqID, inner, r.Action)
	} else {
		fmt.Fprintf(&b, `<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`,
			r.Action, namespace, r.Action, inner, r.Action, reqID, r.Action)
	}
	return Response{ContentType: "text/xml;charset=UTF-8", Body: b.Bytes()}
}

func xmlText(s string) string {
	var b strings.Builder
	// xml.EscapeText cannot fail on a strings.Builder.
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
