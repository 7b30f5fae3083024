package action_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/action"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// newEC2 starts the loopback AWS and points the SDK's standard settings at
// it. AWS_REGION is then set to another region: the actions must take the
// region from IMDS, and the server refuses signatures scoped elsewhere.
func newEC2(t *testing.T) *awstest.Server {
	t.Helper()
	s := awstest.New(t, awstest.WithInstanceID("i-0c0ffee0c0ffee000"), awstest.WithRegion("eu-central-1"))
	s.Env(t)
	t.Setenv("AWS_REGION", "us-east-1")
	return s
}

var idle = action.Request{Reason: "no SSH session for 15m0s", IdleSince: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}

func TestEC2Stop(t *testing.T) {
	s := newEC2(t)
	res, err := (&action.EC2Stop{}).Do(t.Context(), idle)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	want := "stopped i-0c0ffee0c0ffee000 in eu-central-1 (running -> stopping): no SSH session for 15m0s (idle since 2026-03-01T12:00:00Z)"
	if res.Summary != want || res.Action != "ec2-stop" {
		t.Errorf("result %+v, want %q", res, want)
	}

	stops := s.Calls("ec2", "StopInstances")
	if len(stops) != 1 {
		t.Fatalf("%d StopInstances, want 1", len(stops))
	}
	checkSigned(t, stops[0], s)
	if diff := cmp.Diff(stopParams(s, ""), map[string][]string(stops[0].Params)); diff != "" {
		t.Errorf("StopInstances params (-want +got):\n%s", diff)
	}
	checkIMDSv2(t, s)
	if state, hib := s.InstanceState(); state != "stopping" || hib {
		t.Errorf("instance %s, hibernated %v; want stopping without hibernation", state, hib)
	}
}

func TestEC2Hibernate(t *testing.T) {
	s := newEC2(t)
	res, err := (&action.EC2Hibernate{}).Do(t.Context(), idle)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if want := "stopped i-0c0ffee0c0ffee000 in eu-central-1 with hibernation (running -> stopping)"; !strings.HasPrefix(res.Summary, want) {
		t.Errorf("summary %q, want prefix %q", res.Summary, want)
	}
	stops := s.Calls("ec2", "StopInstances")
	if len(stops) != 1 {
		t.Fatalf("%d StopInstances, want 1", len(stops))
	}
	checkSigned(t, stops[0], s)
	if diff := cmp.Diff(stopParams(s, "true"), map[string][]string(stops[0].Params)); diff != "" {
		t.Errorf("StopInstances params (-want +got):\n%s", diff)
	}
	if _, hib := s.InstanceState(); !hib {
		t.Errorf("instance not hibernated")
	}
}

func TestEC2HibernateFallsBack(t *testing.T) {
	for _, tt := range []struct{ code, msg string }{
		{awstest.CodeUnsupportedHibernation, "The instance can't be hibernated because it was not configured at launch for hibernation: i-0c0ffee0c0ffee000"},
		{awstest.CodeUnsupportedOperation, "Instance i-0c0ffee0c0ffee000 is a Spot Instance and cannot be hibernated with StopInstances."},
		{"InvalidParameterCombination", "Instance i-0c0ffee0c0ffee000 is not enabled for hibernation."},
	} {
		t.Run(tt.code, func(t *testing.T) {
			s := newEC2(t)
			s.SetHibernationFailure(tt.code, tt.msg)
			res, err := (&action.EC2Hibernate{}).Do(t.Context(), idle)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			want := "hibernation not possible (" + tt.code + ": " + tt.msg + "): stopped i-0c0ffee0c0ffee000 in eu-central-1 (running -> stopping)"
			if !strings.HasPrefix(res.Summary, want) {
				t.Errorf("summary %q\nwant prefix %q", res.Summary, want)
			}
			stops := s.Calls("ec2", "StopInstances")
			if len(stops) != 2 {
				t.Fatalf("%d StopInstances, want the refused hibernation and a plain stop", len(stops))
			}
			if stops[0].Params.Get("Hibernate") != "true" || stops[0].ErrorCode != tt.code {
				t.Errorf("first call: Hibernate=%q answered %q; want true answered %s", stops[0].Params.Get("Hibernate"), stops[0].ErrorCode, tt.code)
			}
			if stops[1].Params.Has("Hibernate") || stops[1].Status != http.StatusOK {
				t.Errorf("second call: params %v answered %d; want no Hibernate, 200", stops[1].Params, stops[1].Status)
			}
			for _, r := range stops {
				checkSigned(t, r, s)
			}
			if state, hib := s.InstanceState(); state != "stopping" || hib {
				t.Errorf("instance %s, hibernated %v; want stopping without hibernation", state, hib)
			}
		})
	}
}

func TestEC2HibernateDoesNotFallBack(t *testing.T) {
	for _, tt := range []struct {
		name      string
		configure func(*awstest.Server)
		code      string
	}{
		{"unauthorized", func(s *awstest.Server) {
			s.SetEC2Failure("UnauthorizedOperation", "You are not authorized to perform this operation.")
		}, "UnauthorizedOperation"},
		{"wrong state", func(s *awstest.Server) {
			s.SetHibernationFailure("IncorrectInstanceState", "The instance 'i-0c0ffee0c0ffee000' is not in a state from which it can be stopped.")
		}, "IncorrectInstanceState"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newEC2(t)
			tt.configure(s)
			_, err := (&action.EC2Hibernate{}).Do(t.Context(), idle)
			var api smithy.APIError
			if !errors.As(err, &api) || api.ErrorCode() != tt.code {
				t.Fatalf("Do = %v, want API error %s", err, tt.code)
			}
			if n := len(s.Calls("ec2", "StopInstances")); n != 1 {
				t.Errorf("%d StopInstances, want 1 (no fallback)", n)
			}
		})
	}
}

func TestEC2StopError(t *testing.T) {
	s := newEC2(t)
	s.SetEC2Failure("UnauthorizedOperation", "You are not authorized to perform this operation.")
	_, err := (&action.EC2Stop{}).Do(t.Context(), idle)
	if err == nil || !strings.HasPrefix(err.Error(), "stop i-0c0ffee0c0ffee000 in eu-central-1: ") || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Errorf("Do = %v, want the instance and the API error", err)
	}
}

// TestEC2WithoutIMDS: with the metadata client disabled the actions fail
// before any EC2 call, saying why.
func TestEC2WithoutIMDS(t *testing.T) {
	s := newEC2(t)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, a := range []action.Action{&action.EC2Stop{}, &action.EC2Hibernate{}} {
		_, err := a.Do(t.Context(), idle)
		if err == nil || !strings.Contains(err.Error(), "read instance identity from IMDS") {
			t.Errorf("%s: Do = %v, want an IMDS error", a.Name(), err)
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

func stopParams(s *awstest.Server, hibernate string) map[string][]string {
	p := map[string][]string{"Action": {"StopInstances"}, "Version": {"2016-11-15"}, "InstanceId.1": {s.InstanceID}}
	if hibernate != "" {
		p["Hibernate"] = []string{hibernate}
	}
	return p
}

func checkSigned(t *testing.T, r awstest.Request, s *awstest.Server) {
	t.Helper()
	if r.Auth == nil || !r.Auth.Verified {
		t.Fatalf("%s not validly signed: %+v (answered %d %s)", r.Action, r.Auth, r.Status, r.ErrorCode)
	}
	if r.Auth.AccessKeyID != awstest.AccessKeyID || r.Auth.Region != s.Region || r.Auth.Service != "ec2" {
		t.Errorf("%s credential scope %+v, want %s/%s/ec2", r.Action, r.Auth, awstest.AccessKeyID, s.Region)
	}
}

// checkIMDSv2 asserts the metadata was read the IMDSv2 way: a token first,
// then only GETs that carried it and were answered.
func checkIMDSv2(t *testing.T, s *awstest.Server) {
	t.Helper()
	var imds []awstest.Request
	for _, r := range s.Requests() {
		if r.Service == "imds" {
			imds = append(imds, r)
		}
	}
	if len(imds) < 2 || imds[0].Action != "PUT /latest/api/token" || imds[0].Status != http.StatusOK {
		t.Fatalf("IMDS requests %v, want a token PUT first", imds)
	}
	for _, r := range imds[1:] {
		if r.Method != http.MethodGet || r.Header.Get("X-Aws-Ec2-Metadata-Token") == "" || r.Status != http.StatusOK {
			t.Errorf("%s: token %q, answered %d; want a token and 200", r.Action, r.Header.Get("X-Aws-Ec2-Metadata-Token"), r.Status)
		}
	}
}
