package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// runAWS runs "connwatch aws ARGS..." as run does, with the aws command
// added to the root if main.go does not add it yet.
func runAWS(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	root := newRootCmd()
	found := false
	for _, c := range root.Commands() {
		found = found || c.Name() == "aws"
	}
	if !found {
		root.AddCommand(newAWSCmd())
	}
	var out, errb bytes.Buffer
	root.SetArgs(append([]string{"aws"}, args...))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(t.Context())
	code = exitOK
	if err != nil {
		fmt.Fprintf(&errb, "connwatch: %v\n", err)
		code = exitFailure
		var ue usageError
		if errors.As(err, &ue) {
			code = exitUsage
		}
	}
	return code, out.String(), errb.String()
}

func newAWS(t *testing.T) *awstest.Server {
	t.Helper()
	s := awstest.New(t, awstest.WithInstanceID("i-0c0ffee0c0ffee000"), awstest.WithRegion("eu-central-1"))
	s.Env(t)
	// The region must come from IMDS, not from the environment.
	t.Setenv("AWS_REGION", "us-east-1")
	return s
}

// wantIdleAlarm is the PutMetricAlarm input of the default alarm for the
// instance newAWS pretends to be, as the API's JSON.
func wantIdleAlarm() map[string]any {
	return map[string]any{
		"AlarmName": "connwatch-idle-i-0c0ffee0c0ffee000",
		"AlarmDescription": "connwatch: stop i-0c0ffee0c0ffee000 when nobody is connected over SSH: the maximum of EC2/SSH Connections is 0 " +
			"in 15 of the last 15 periods of 1m0s (15m0s). The connwatch agent publishes the metric; missing data is treated as missing. " +
			"Made by `connwatch aws setup-alarm`.",
		"ActionsEnabled":     true,
		"AlarmActions":       []any{"arn:aws:automate:eu-central-1:ec2:stop"},
		"Namespace":          "EC2",
		"MetricName":         "SSH Connections",
		"Dimensions":         []any{map[string]any{"Name": "InstanceId", "Value": "i-0c0ffee0c0ffee000"}},
		"Statistic":          "Maximum",
		"Period":             60.0,
		"EvaluationPeriods":  15.0,
		"DatapointsToAlarm":  15.0,
		"Threshold":          0.0,
		"ComparisonOperator": "LessThanOrEqualToThreshold",
		"TreatMissingData":   "missing",
	}
}

func decodeJSONStream(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decode %s: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

func TestAWSSetupAlarmDryRun(t *testing.T) {
	s := newAWS(t)
	code, stdout, stderr := runAWS(t, "setup-alarm", "--dry-run")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := decodeJSONStream(t, stdout)
	if len(got) != 1 {
		t.Fatalf("printed %d inputs:\n%s", len(got), stdout)
	}
	if diff := cmp.Diff(wantIdleAlarm(), got[0]); diff != "" {
		t.Errorf("dry-run input (-want +got):\n%s", diff)
	}
	if n := len(s.Calls(awstest.CloudWatchService, "PutMetricAlarm")); n != 0 {
		t.Errorf("dry run made %d PutMetricAlarm calls", n)
	}
	if len(s.Requests()) == 0 {
		t.Errorf("IMDS was not asked for the instance")
	}
}

func TestAWSSetupAlarmDryRunWithFlags(t *testing.T) {
	s := newAWS(t)
	code, stdout, stderr := runAWS(t, "setup-alarm", "--dry-run", "--instance-id", "i-0123456789abcdef0", "--region", "ap-southeast-2",
		"--evaluation-periods", "30", "--datapoints-to-alarm", "25", "--action", "terminate", "--treat-missing-data", "notBreaching",
		"--dimension", "Team=infra", "--alarm-name", "idle-dev", "--client-vpn-endpoint", "cvpn-endpoint-0123456789abcdef0",
		"--sns-topic", "arn:aws:sns:ap-southeast-2:123456789012:vpn-logins")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("with --instance-id and --region, %d requests went out", n)
	}
	got := decodeJSONStream(t, stdout)
	if len(got) != 2 {
		t.Fatalf("printed %d inputs:\n%s", len(got), stdout)
	}
	idle := got[0]
	if idle["AlarmName"] != "idle-dev" || idle["EvaluationPeriods"] != 30.0 || idle["DatapointsToAlarm"] != 25.0 ||
		idle["TreatMissingData"] != "notBreaching" || fmt.Sprint(idle["AlarmActions"]) != "[arn:aws:automate:ap-southeast-2:ec2:terminate]" ||
		fmt.Sprint(idle["Dimensions"]) != "[map[Name:InstanceId Value:i-0123456789abcdef0] map[Name:Team Value:infra]]" {
		t.Errorf("idle alarm %v", idle)
	}
	wantVPN := map[string]any{
		"AlarmName": "connwatch-client-vpn-cvpn-endpoint-0123456789abcdef0",
		"AlarmDescription": "connwatch: new connections on AWS Client VPN endpoint cvpn-endpoint-0123456789abcdef0: " +
			"DIFF of the maximum ActiveConnectionsCount per 5 minutes is >= 1 (net increases only). Made by `connwatch aws setup-alarm`.",
		"ActionsEnabled": true,
		"AlarmActions":   []any{"arn:aws:sns:ap-southeast-2:123456789012:vpn-logins"},
		"Metrics": []any{
			map[string]any{
				"Id": "connections",
				"MetricStat": map[string]any{
					"Metric": map[string]any{
						"Namespace": "AWS/ClientVPN", "MetricName": "ActiveConnectionsCount",
						"Dimensions": []any{map[string]any{"Name": "Endpoint", "Value": "cvpn-endpoint-0123456789abcdef0"}},
					},
					"Period": 300.0, "Stat": "Maximum",
				},
				"ReturnData": false,
			},
			map[string]any{"Id": "new_connections", "Expression": "DIFF(connections)", "Label": "New Client VPN connections", "ReturnData": true},
		},
		"EvaluationPeriods":  1.0,
		"DatapointsToAlarm":  1.0,
		"Threshold":          1.0,
		"ComparisonOperator": "GreaterThanOrEqualToThreshold",
		"TreatMissingData":   "notBreaching",
	}
	if diff := cmp.Diff(wantVPN, got[1]); diff != "" {
		t.Errorf("Client VPN alarm (-want +got):\n%s", diff)
	}
}

func TestAWSSetupAlarmCreatesAndUpdates(t *testing.T) {
	s := newAWS(t)
	code, stdout, stderr := runAWS(t, "setup-alarm")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "alarm connwatch-idle-i-0c0ffee0c0ffee000 saved in eu-central-1: arn:aws:automate:eu-central-1:ec2:stop when EC2/SSH Connections <= 0 for 15 of 15 periods of 60s (missing data: missing)\n"
	if stdout != want {
		t.Errorf("printed %q, want %q", stdout, want)
	}
	calls := s.Calls(awstest.CloudWatchService, "PutMetricAlarm")
	if len(calls) != 1 {
		t.Fatalf("%d PutMetricAlarm calls", len(calls))
	}
	r := calls[0]
	if r.Auth == nil || !r.Auth.Verified || r.Auth.Region != "eu-central-1" {
		t.Errorf("call not signed for eu-central-1: %+v", r.Auth)
	}
	// What went over the wire is what --dry-run prints.
	var wire map[string]any
	if err := r.DecodeCBOR(&wire); err != nil {
		t.Fatal(err)
	}
	wireJSON, _ := json.Marshal(wire)
	var gotWire map[string]any
	json.Unmarshal(wireJSON, &gotWire)
	if diff := cmp.Diff(wantIdleAlarm(), gotWire); diff != "" {
		t.Errorf("PutMetricAlarm on the wire (-dry-run +wire):\n%s", diff)
	}
	a, ok := s.Alarm("connwatch-idle-i-0c0ffee0c0ffee000")
	if !ok || a.StateValue != awstest.StateInsufficientData || *a.EvaluationPeriods != 15 || a.Statistic != "Maximum" {
		t.Fatalf("stored alarm %+v", a)
	}

	// Run again with other flags: the alarm is updated in place.
	if code, _, stderr := runAWS(t, "setup-alarm", "--evaluation-periods", "20", "--datapoints-to-alarm", "18"); code != exitOK {
		t.Fatalf("update: exit %d: %s", code, stderr)
	}
	a, _ = s.Alarm("connwatch-idle-i-0c0ffee0c0ffee000")
	if *a.EvaluationPeriods != 20 || *a.DatapointsToAlarm != 18 {
		t.Errorf("after update: %d of %d", *a.DatapointsToAlarm, *a.EvaluationPeriods)
	}
}

func TestAWSSetupAlarmClientVPN(t *testing.T) {
	s := newAWS(t)
	code, stdout, stderr := runAWS(t, "setup-alarm", "--client-vpn-endpoint", "cvpn-endpoint-0a1b2c3d4e5f60718", "--sns-topic", "arn:aws:sns:eu-central-1:123456789012:vpn")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "alarm connwatch-client-vpn-cvpn-endpoint-0a1b2c3d4e5f60718 saved in eu-central-1: arn:aws:sns:eu-central-1:123456789012:vpn when DIFF(connections) >= 1") {
		t.Errorf("output %q", stdout)
	}
	a, ok := s.Alarm("connwatch-client-vpn-cvpn-endpoint-0a1b2c3d4e5f60718")
	if !ok || len(a.Metrics) != 2 || a.Metrics[1].Expression != "DIFF(connections)" || a.Metrics[0].MetricStat.Metric.Namespace != "AWS/ClientVPN" {
		t.Errorf("VPN alarm %+v", a)
	}
}

func TestAWSSetupAlarmRefused(t *testing.T) {
	s := newAWS(t)
	s.SetCloudWatchFailure(awstest.CodeAccessDenied, 0, -1)
	code, _, stderr := runAWS(t, "setup-alarm")
	if code != exitFailure || !strings.Contains(stderr, "AccessDenied") {
		t.Errorf("exit %d, stderr %q; want 1 with AccessDenied", code, stderr)
	}
}

func TestAWSSetupAlarmUsage(t *testing.T) {
	newAWS(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--action", "hibernate"}, "no hibernate alarm action"},
		{[]string{"--action", "shutdown"}, "want stop, terminate or reboot"},
		{[]string{"--client-vpn-endpoint", "cvpn-endpoint-0123456789abcdef0"}, "needs --sns-topic"},
		{[]string{"--sns-topic", "arn:aws:sns:eu-central-1:123456789012:x"}, "goes with --client-vpn-endpoint"},
		{[]string{"--client-vpn-endpoint", "vpn-1", "--sns-topic", "arn:aws:sns:eu-central-1:123456789012:x"}, "cvpn-endpoint-"},
		{[]string{"--client-vpn-endpoint", "cvpn-endpoint-0123456789abcdef0", "--sns-topic", "arn:aws:sns:us-east-1:123456789012:x"}, "its own region"},
		{[]string{"--dimension", "Team"}, "NAME=VALUE"},
		{[]string{"--datapoints-to-alarm", "16"}, "between 1 and the evaluation periods"},
		{[]string{"--datapoints-to-alarm", "0"}, "at least 1"},
		{[]string{"--treat-missing-data", "zero"}, "missing, breaching"},
		{[]string{"--period", "45s"}, "10s, 30s or a multiple of 1m"},
		{[]string{"--evaluation-periods", "2000"}, "span at most a day"},
		{[]string{"--instance-id", "web-1"}, "want i-"},
		{[]string{"extra"}, "takes no arguments"},
		{[]string{"--no-such-flag"}, "unknown flag"},
	} {
		code, _, stderr := runAWS(t, append([]string{"setup-alarm"}, tt.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", tt.args, code, stderr, exitUsage, tt.want)
		}
	}
	if code, _, _ := runAWS(t, "bogus"); code != exitUsage {
		t.Errorf("aws bogus: exit %d", code)
	}
}

func TestAWSSetupAlarmNotOnEC2(t *testing.T) {
	s := newAWS(t)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	code, _, stderr := runAWS(t, "setup-alarm", "--dry-run")
	if code != exitFailure || !strings.Contains(stderr, "give --instance-id and --region") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	_ = s
}

func TestAWSSetupAlarmHelp(t *testing.T) {
	code, stdout, _ := runAWS(t, "setup-alarm", "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"LessThanOrEqualToThreshold", "arn:aws:automate:REGION:ec2:stop", "no hibernate alarm action",
		"missing (default)", "breaching", "dead agent", "DIFF", "cannot take EC2 actions", "--dry-run",
		"connwatch-idle-<instance-id>", "Maximum", "iam:CreateServiceLinkedRole", "Exit status",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
