package awstest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// loadConfig loads the SDK configuration the way production code does,
// from the environment Env set up.
func loadConfig(t *testing.T) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	return cfg
}

func TestSDKReadsIMDSWithToken(t *testing.T) {
	s := awstest.New(t, awstest.WithInstanceID("i-0abc"), awstest.WithRegion("ap-southeast-2"))
	s.Env(t)
	client := imds.NewFromConfig(loadConfig(t))

	doc, err := client.GetInstanceIdentityDocument(t.Context(), nil)
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	if doc.InstanceID != "i-0abc" || doc.Region != "ap-southeast-2" || doc.AvailabilityZone != "ap-southeast-2a" {
		t.Errorf("document = %+v", doc.InstanceIdentityDocument)
	}
	for path, want := range map[string]string{"instance-id": "i-0abc", "placement/region": "ap-southeast-2"} {
		out, err := client.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: path})
		if err != nil {
			t.Fatalf("GetMetadata %s: %v", path, err)
		}
		b, _ := io.ReadAll(out.Content)
		_ = out.Content.Close()
		if string(b) != want {
			t.Errorf("GetMetadata %s = %q, want %q", path, b, want)
		}
	}

	reqs := s.Requests()
	if len(reqs) == 0 || reqs[0].Action != "PUT /latest/api/token" {
		t.Fatalf("first request = %+v, want the token PUT", reqs)
	}
	if ttl := reqs[0].Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"); ttl == "" {
		t.Errorf("token PUT carried no TTL header")
	}
	for _, r := range reqs[1:] {
		if r.Method != http.MethodGet || r.Status != http.StatusOK || r.Header.Get("X-Aws-Ec2-Metadata-Token") == "" {
			t.Errorf("%s: status %d, token %q; want 200 with a token", r.Action, r.Status, r.Header.Get("X-Aws-Ec2-Metadata-Token"))
		}
	}
}

func TestIMDSRequiresToken(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := awstest.New(t, awstest.WithClock(fc))
	get := func(token string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/latest/meta-data/instance-id", nil)
		if token != "" {
			req.Header.Set("X-aws-ec2-metadata-token", token)
		}
		return do(t, req).StatusCode
	}
	putToken := func(ttl string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, s.URL+"/latest/api/token", nil)
		if ttl != "" {
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
		}
		resp := do(t, req)
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if got := get(""); got != http.StatusUnauthorized {
		t.Errorf("GET without token: %d, want 401", got)
	}
	if got := get("made-up"); got != http.StatusUnauthorized {
		t.Errorf("GET with unknown token: %d, want 401", got)
	}
	for _, ttl := range []string{"", "0", "21601", "x"} {
		if resp, _ := putToken(ttl); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT token with TTL %q: %d, want 400", ttl, resp.StatusCode)
		}
	}
	resp, tok := putToken("60")
	if resp.StatusCode != http.StatusOK || tok == "" || resp.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "60" {
		t.Fatalf("PUT token: %d %q, TTL header %q", resp.StatusCode, tok, resp.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
	}
	if got := get(tok); got != http.StatusOK {
		t.Errorf("GET with token: %d, want 200", got)
	}
	fc.Advance(61 * time.Second)
	if got := get(tok); got != http.StatusUnauthorized {
		t.Errorf("GET with expired token: %d, want 401", got)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/latest/api/token", nil)
	if got := do(t, req).StatusCode; got != http.StatusMethodNotAllowed {
		t.Errorf("GET /latest/api/token: %d, want 405", got)
	}
}

func TestStopInstancesThroughSDK(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	client := ec2.NewFromConfig(loadConfig(t))

	out, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{
		InstanceIds: []string{s.InstanceID},
		Hibernate:   aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("StopInstances: %v", err)
	}
	if len(out.StoppingInstances) != 1 {
		t.Fatalf("StoppingInstances = %+v", out.StoppingInstances)
	}
	ch := out.StoppingInstances[0]
	if *ch.InstanceId != s.InstanceID || ch.PreviousState.Name != "running" || ch.CurrentState.Name != "stopping" || *ch.CurrentState.Code != 64 {
		t.Errorf("state change = %s %s -> %s", *ch.InstanceId, ch.PreviousState.Name, ch.CurrentState.Name)
	}
	if state, hib := s.InstanceState(); state != "stopping" || !hib {
		t.Errorf("InstanceState = %s, %v; want stopping, hibernated", state, hib)
	}

	calls := s.Calls("ec2", "StopInstances")
	if len(calls) != 1 {
		t.Fatalf("recorded %d StopInstances, want 1", len(calls))
	}
	r := calls[0]
	if r.Protocol != awstest.ProtocolQuery || r.Method != http.MethodPost || r.Path != "/" {
		t.Errorf("protocol %s %s %s, want query POST /", r.Protocol, r.Method, r.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", ct)
	}
	wantParams := map[string][]string{
		"Action": {"StopInstances"}, "Version": {"2016-11-15"},
		"InstanceId.1": {s.InstanceID}, "Hibernate": {"true"},
	}
	if diff := cmp.Diff(wantParams, map[string][]string(r.Params)); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	if r.Auth == nil || !r.Auth.Verified {
		t.Fatalf("signature not verified: %+v", r.Auth)
	}
	if r.Auth.AccessKeyID != awstest.AccessKeyID || r.Auth.Region != s.Region || r.Auth.Service != "ec2" {
		t.Errorf("credential scope = %+v", r.Auth)
	}
}

func TestHibernationFailure(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	msg := "The instance can't be hibernated because it was not configured at launch for hibernation: " + s.InstanceID
	s.SetHibernationFailure(awstest.CodeUnsupportedHibernation, msg)
	client := ec2.NewFromConfig(loadConfig(t))

	_, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}, Hibernate: aws.Bool(true)})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != awstest.CodeUnsupportedHibernation || apiErr.ErrorMessage() != msg {
		t.Fatalf("hibernating stop: %v, want an API error %s", err, awstest.CodeUnsupportedHibernation)
	}
	if state, _ := s.InstanceState(); state != "running" {
		t.Errorf("state after refused hibernation = %s, want running", state)
	}
	if _, err := client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}}); err != nil {
		t.Fatalf("plain stop: %v", err)
	}

	s.SetEC2Failure("UnauthorizedOperation", "You are not authorized to perform this operation.")
	_, err = client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}})
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "UnauthorizedOperation" {
		t.Fatalf("stop with EC2 failure: %v", err)
	}
	_, err = client.StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{"i-0000000000000000f"}})
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidInstanceID.NotFound" {
		t.Fatalf("stop of unknown instance: %v", err)
	}
}

// TestSignatureChecks sends hand-made requests: unsigned, signed with the
// wrong secret, tampered after signing, and scoped to another region.
func TestSignatureChecks(t *testing.T) {
	s := awstest.New(t)
	body := "Action=StopInstances&Version=2016-11-15&InstanceId.1=" + s.InstanceID
	newReq := func() *http.Request {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req
	}
	sign := func(req *http.Request, secret, region, payload string) {
		t.Helper()
		sum := sha256.Sum256([]byte(payload))
		creds := aws.Credentials{AccessKeyID: awstest.AccessKeyID, SecretAccessKey: secret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "ec2", region, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name     string
		prepare  func(*http.Request)
		status   int
		code     string
		verified bool
	}{
		{"signed", func(r *http.Request) { sign(r, awstest.SecretAccessKey, s.Region, body) }, 200, "", true},
		{"unsigned", func(*http.Request) {}, 403, "MissingAuthenticationToken", false},
		{"wrong secret", func(r *http.Request) { sign(r, "not-the-secret", s.Region, body) }, 403, "SignatureDoesNotMatch", false},
		{"tampered body", func(r *http.Request) { sign(r, awstest.SecretAccessKey, s.Region, body+"&Hibernate=true") }, 403, "SignatureDoesNotMatch", false},
		{"other region", func(r *http.Request) { sign(r, awstest.SecretAccessKey, "us-east-1", body) }, 403, "SignatureDoesNotMatch", false},
		{"not sigv4", func(r *http.Request) { r.Header.Set("Authorization", "AWS AKIDEXAMPLE:abc") }, 400, "IncompleteSignature", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(s.Requests())
			req := newReq()
			tt.prepare(req)
			resp := do(t, req)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.code != "" && !bytes.Contains(b, []byte("<Code>"+tt.code+"</Code>")) {
				t.Errorf("body %s, want EC2 error %s", b, tt.code)
			}
			r := s.Requests()[n]
			if r.ErrorCode != tt.code || (r.Auth != nil && r.Auth.Verified) != tt.verified {
				t.Errorf("recorded code %q verified %v, want %q %v", r.ErrorCode, r.Auth != nil && r.Auth.Verified, tt.code, tt.verified)
			}
		})
	}
}

func TestUnknownAction(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	client := ec2.NewFromConfig(loadConfig(t))
	in := &ec2.DescribeVpnConnectionsInput{VpnConnectionIds: []string{"vpn-0123"}}
	_, err := client.DescribeVpnConnections(t.Context(), in)
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidAction" {
		t.Fatalf("unregistered action: %v, want InvalidAction", err)
	}

	// Handle adds an operation; the router hands it the parsed request.
	s.Handle("ec2", "DescribeVpnConnections", func(r *awstest.Request) awstest.Response {
		if r.Params.Get("VpnConnectionId.1") != "vpn-0123" {
			return awstest.ErrorResponse(r, 400, "InvalidVpnConnectionID.NotFound", "no such VPN connection")
		}
		return awstest.QueryResponse(r, awstest.EC2Namespace, "<vpnConnectionSet/>")
	})
	out, err := client.DescribeVpnConnections(t.Context(), in)
	if err != nil || len(out.VpnConnections) != 0 {
		t.Fatalf("registered action: %v, %+v", err, out)
	}
}

func TestEnvKeepsSDKOnLoopback(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_EC2", "https://ec2.example.invalid")
	t.Setenv("AWS_PROFILE", "production")
	s := awstest.New(t)
	s.Env(t)
	cfg := loadConfig(t)
	creds, err := cfg.Credentials.Retrieve(t.Context())
	if err != nil || creds.AccessKeyID != awstest.AccessKeyID || creds.Source != "EnvConfigCredentials" {
		t.Fatalf("credentials = %+v, %v; want the static test keys from the environment", creds, err)
	}
	if cfg.Region != s.Region {
		t.Errorf("region = %q, want %q", cfg.Region, s.Region)
	}
	if _, err := ec2.NewFromConfig(cfg).StopInstances(t.Context(), &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}}); err != nil {
		t.Fatalf("StopInstances: %v", err)
	}
	if n := len(s.Calls("ec2", "StopInstances")); n != 1 {
		t.Errorf("server saw %d StopInstances, want 1", n)
	}
}

func do(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestIMDSInstanceTags(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	client := imds.NewFromConfig(loadConfig(t))
	get := func(path string) (string, error) {
		out, err := client.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(out.Content)
		return string(b), err
	}
	s.SetInstanceTag("Name", "devbox", false)
	s.SetInstanceTag("connwatch:hold-until", "2026-12-05T22:00:00Z", false)
	// Off, as on an instance launched without InstanceMetadataTags: 404.
	if v, err := get("tags/instance"); err == nil {
		t.Fatalf("tags with metadata tags off = %q, want an error (404)", v)
	}
	s.SetInstanceMetadataTags(true)
	if v, err := get("tags/instance"); err != nil || v != "Name\nconnwatch:hold-until" {
		t.Fatalf("tags/instance = %q, %v", v, err)
	}
	if v, err := get("tags/instance/connwatch:hold-until"); err != nil || v != "2026-12-05T22:00:00Z" {
		t.Fatalf("hold tag = %q, %v", v, err)
	}
	s.SetInstanceTag("connwatch:hold-until", "", true)
	if v, err := get("tags/instance/connwatch:hold-until"); err == nil {
		t.Fatalf("deleted tag = %q, want 404", v)
	}
}

// checkPages checks that the EC2 action was called for n pages of
// maxResults each, the first without a NextToken and the others with one.
func checkPages(t *testing.T, s *awstest.Server, action string, n int, maxResults string) {
	t.Helper()
	calls := s.Calls("ec2", action)
	if len(calls) != n {
		t.Fatalf("%d %s requests, want %d pages", len(calls), action, n)
	}
	for i, c := range calls {
		if c.Params.Get("MaxResults") != maxResults || (i == 0) != (c.Params.Get("NextToken") == "") {
			t.Errorf("%s request %d: MaxResults %q NextToken %q", action, i, c.Params.Get("MaxResults"), c.Params.Get("NextToken"))
		}
	}
}

func TestLatency(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	s.AddInstance(awstest.Instance{ID: "i-0aaaaaaaaaaaaaaaa", State: awstest.InstanceRunning})
	client := ec2.NewFromConfig(loadConfig(t))
	s.SetLatency(50 * time.Millisecond)
	begin := time.Now()
	if _, err := client.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0aaaaaaaaaaaaaaaa"}}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < 50*time.Millisecond {
		t.Errorf("DescribeInstances took %v with a latency of 50ms", took)
	}
}

// pager is an SDK paginator of EC2 pages of type O.
type pager[O any] interface {
	HasMorePages() bool
	NextPage(context.Context, ...func(*ec2.Options)) (O, error)
}

// allPages reads every page of p (at most 100), failing the test on an
// error of op.
func allPages[O any](t *testing.T, op string, p pager[O]) []O {
	t.Helper()
	var out []O
	for i := 0; p.HasMorePages(); i++ {
		if i == 100 {
			t.Fatalf("%s: more than 100 pages", op)
		}
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		out = append(out, page)
	}
	return out
}
