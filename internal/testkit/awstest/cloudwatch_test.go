package awstest_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

var cwStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newCloudWatch starts a server on a fake clock and a CloudWatch client
// loaded from the standard settings, without the SDK's own retries so that
// every injected failure reaches the test.
func newCloudWatch(t *testing.T) (*awstest.Server, *clock.Fake, *cloudwatch.Client) {
	t.Helper()
	fc := clock.NewFake(cwStart)
	s := awstest.New(t, awstest.WithClock(fc))
	s.Env(t)
	client := cloudwatch.NewFromConfig(loadConfig(t), func(o *cloudwatch.Options) { o.Retryer = aws.NopRetryer{} })
	return s, fc, client
}

func datum(ts time.Time, v float64) types.MetricDatum {
	return types.MetricDatum{
		MetricName: aws.String("SSH Connections"),
		Dimensions: []types.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(awstest.DefaultInstanceID)}},
		Timestamp:  aws.Time(ts), Value: aws.Float64(v), Unit: types.StandardUnitCount, StorageResolution: aws.Int32(60),
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestPutMetricDataWire(t *testing.T) {
	s, _, client := newCloudWatch(t)
	_, err := client.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{
		Namespace:  aws.String("EC2"),
		MetricData: []types.MetricDatum{datum(cwStart.Add(-time.Minute), 2), datum(cwStart, 0)},
	})
	if err != nil {
		t.Fatalf("PutMetricData: %v", err)
	}
	calls := s.Calls(awstest.CloudWatchService, "PutMetricData")
	if len(calls) != 1 {
		t.Fatalf("%d PutMetricData calls recorded", len(calls))
	}
	r := calls[0]
	if r.Protocol != awstest.ProtocolRPCv2CBOR || r.Method != http.MethodPost ||
		r.Path != "/service/GraniteServiceVersion20100801/operation/PutMetricData" {
		t.Errorf("request %s %s %s", r.Protocol, r.Method, r.Path)
	}
	for k, want := range map[string]string{"Smithy-Protocol": "rpc-v2-cbor", "Content-Type": "application/cbor", "Accept": "application/cbor", "X-Amzn-Query-Mode": "true"} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if r.Auth == nil || !r.Auth.Verified || r.Auth.Service != "monitoring" || r.Auth.Region != s.Region {
		t.Errorf("signature %+v, want verified for monitoring in %s", r.Auth, s.Region)
	}
	got := s.Datapoints()
	if len(got) != 2 {
		t.Fatalf("datapoints %+v", got)
	}
	for i, want := range []struct {
		t time.Time
		v float64
	}{{cwStart.Add(-time.Minute), 2}, {cwStart, 0}} {
		d := got[i]
		if d.Namespace != "EC2" || d.MetricName != "SSH Connections" || d.Dimension("InstanceId") != awstest.DefaultInstanceID ||
			!d.Time.Equal(want.t) || *d.Value != want.v || d.Unit != "Count" || *d.StorageResolution != 60 || d.Call != 1 {
			t.Errorf("datapoint %d = %+v, want %v at %v", i, d, want.v, want.t)
		}
	}
}

// TestPutMetricDataGzip sends a body big enough for the SDK to compress.
func TestPutMetricDataGzip(t *testing.T) {
	s, _, client := newCloudWatch(t)
	var data []types.MetricDatum
	for i := range awstest.MaxMetricDataPerCall {
		data = append(data, datum(cwStart.Add(-time.Duration(i)*time.Minute), float64(i%3)))
	}
	if _, err := client.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{Namespace: aws.String("EC2"), MetricData: data}); err != nil {
		t.Fatalf("PutMetricData of %d: %v", len(data), err)
	}
	r := s.Calls(awstest.CloudWatchService, "PutMetricData")[0]
	if r.Header.Get("Content-Encoding") != "gzip" || len(r.Payload) <= len(r.Body) {
		t.Errorf("Content-Encoding %q, body %d bytes, payload %d: want a gzip body", r.Header.Get("Content-Encoding"), len(r.Body), len(r.Payload))
	}
	if n := len(s.Datapoints()); n != awstest.MaxMetricDataPerCall {
		t.Errorf("%d datapoints stored", n)
	}
	t.Logf("%d datapoints: %d bytes CBOR, %d bytes gzip on the wire", len(data), len(r.Payload), len(r.Body))
}

func TestPutMetricDataLimits(t *testing.T) {
	s, _, client := newCloudWatch(t)
	tooMany := make([]types.MetricDatum, awstest.MaxMetricDataPerCall+1)
	for i := range tooMany {
		tooMany[i] = datum(cwStart, 1)
	}
	tests := []struct {
		name string
		data []types.MetricDatum
		ns   string
		code string
		msg  string
	}{
		{"too many", tooMany, "EC2", "InvalidParameterValue", "must not have a size greater than 1000"},
		{"too old", []types.MetricDatum{datum(cwStart, 1), datum(cwStart.Add(-14*24*time.Hour-time.Second), 1)}, "EC2", "InvalidParameterValue",
			"MetricData.member.2.Timestamp must specify a time within the past two weeks"},
		{"too new", []types.MetricDatum{datum(cwStart.Add(2*time.Hour+time.Second), 1)}, "EC2", "InvalidParameterValue", "two hours in the future"},
		{"AWS namespace", []types.MetricDatum{datum(cwStart, 1)}, "AWS/EC2", "InvalidParameterValue", "Namespace"},
		{"no value", []types.MetricDatum{{MetricName: aws.String("m")}}, "EC2", "InvalidParameterCombination", "mutually exclusive"},
		{"bad resolution", []types.MetricDatum{{MetricName: aws.String("m"), Value: aws.Float64(1), StorageResolution: aws.Int32(5)}}, "EC2", "InvalidParameterValue", "StorageResolution"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &cloudwatch.PutMetricDataInput{MetricData: tt.data}
			if tt.ns != "" {
				in.Namespace = aws.String(tt.ns)
			}
			_, err := client.PutMetricData(t.Context(), in)
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != tt.code || !strings.Contains(ae.ErrorMessage(), tt.msg) || ae.ErrorFault() != smithy.FaultClient {
				t.Fatalf("err = %v, want %s containing %q", err, tt.code, tt.msg)
			}
		})
	}
	// The modelled error comes back as its SDK type.
	_, err := client.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{Namespace: aws.String("EC2"), MetricData: tooMany})
	var ipv *types.InvalidParameterValueException
	if !errors.As(err, &ipv) {
		t.Errorf("err %T, want *types.InvalidParameterValueException", err)
	}
	if n := len(s.Datapoints()); n != 0 {
		t.Errorf("%d datapoints stored from refused requests", n)
	}
	// Exactly two weeks old and two hours ahead are still accepted.
	if _, err := client.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{Namespace: aws.String("EC2"),
		MetricData: []types.MetricDatum{datum(cwStart.Add(-14*24*time.Hour), 1), datum(cwStart.Add(2*time.Hour), 1)}}); err != nil {
		t.Errorf("edge timestamps: %v", err)
	}
}

func TestCloudWatchFailureInjection(t *testing.T) {
	s, _, client := newCloudWatch(t)
	put := func() error {
		_, err := client.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{Namespace: aws.String("EC2"), MetricData: []types.MetricDatum{datum(cwStart, 1)}})
		return err
	}
	for _, tt := range []struct {
		code   string
		status int
		fault  smithy.ErrorFault
	}{
		{"Throttling", 400, smithy.FaultClient},
		{"InternalServiceError", 500, smithy.FaultServer},
		{"ServiceUnavailable", 503, smithy.FaultServer},
		{"AccessDenied", 403, smithy.FaultClient},
	} {
		s.SetCloudWatchFailure(tt.code, 0, 2)
		for i := range 2 {
			err := put()
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != tt.code || ae.ErrorFault() != tt.fault {
				t.Errorf("%s call %d: %v (fault %v), want %s", tt.code, i, err, faultOf(err), tt.code)
			}
		}
		if err := put(); err != nil {
			t.Errorf("after %s x2: %v", tt.code, err)
		}
		last := s.Requests()
		if got := last[len(last)-2]; got.Status != tt.status || got.ErrorCode != tt.code {
			t.Errorf("recorded %d %s, want %d %s", got.Status, got.ErrorCode, tt.status, tt.code)
		}
	}

	s.SetCloudWatchFailure("Throttling", 0, -1)
	for range 3 {
		if apiCode(put()) != "Throttling" {
			t.Fatal("unbounded failure stopped")
		}
	}
	s.SetCloudWatchFailure("", 0, 0)
	if err := put(); err != nil {
		t.Errorf("after clearing: %v", err)
	}

	s.SetCloudWatchOutage(true)
	err := put()
	if err == nil || apiCode(err) != "" {
		t.Errorf("during outage: %v, want a transport error", err)
	}
	reqs := s.Requests()
	if r := reqs[len(reqs)-1]; r.ErrorCode != "ConnectionClosed" || r.Action != "PutMetricData" || r.Service != "monitoring" {
		t.Errorf("outage request recorded as %+v", r)
	}
	s.SetCloudWatchOutage(false)
	if err := put(); err != nil {
		t.Errorf("after outage: %v", err)
	}
	if n := len(s.Datapoints()); n != 6 {
		t.Errorf("%d datapoints accepted, want 6", n)
	}
}

func faultOf(err error) smithy.ErrorFault {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorFault()
	}
	return smithy.FaultUnknown
}

func TestAlarmLifecycle(t *testing.T) {
	s, fc, client := newCloudWatch(t)
	name := "connwatch-idle-" + s.InstanceID
	in := &cloudwatch.PutMetricAlarmInput{
		AlarmName:          aws.String(name),
		AlarmDescription:   aws.String("stop when idle"),
		Namespace:          aws.String("EC2"),
		MetricName:         aws.String("SSH Connections"),
		Dimensions:         []types.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(s.InstanceID)}},
		Statistic:          types.StatisticMaximum,
		Period:             aws.Int32(60),
		EvaluationPeriods:  aws.Int32(15),
		DatapointsToAlarm:  aws.Int32(15),
		Threshold:          aws.Float64(0),
		ComparisonOperator: types.ComparisonOperatorLessThanOrEqualToThreshold,
		TreatMissingData:   aws.String("missing"),
		AlarmActions:       []string{"arn:aws:automate:" + s.Region + ":ec2:stop"},
	}
	if _, err := client.PutMetricAlarm(t.Context(), in); err != nil {
		t.Fatalf("PutMetricAlarm: %v", err)
	}
	a, ok := s.Alarm(name)
	if !ok || a.StateValue != "INSUFFICIENT_DATA" || *a.EvaluationPeriods != 15 || *a.Threshold != 0 || a.Statistic != "Maximum" ||
		a.AlarmArn != fmt.Sprintf("arn:aws:cloudwatch:%s:%s:alarm:%s", s.Region, s.AccountID, name) {
		t.Fatalf("stored alarm %+v", a)
	}

	describe := func() types.MetricAlarm {
		t.Helper()
		out, err := client.DescribeAlarms(t.Context(), &cloudwatch.DescribeAlarmsInput{AlarmNames: []string{name, "other"}})
		if err != nil || len(out.MetricAlarms) != 1 {
			t.Fatalf("DescribeAlarms: %v, %+v", err, out)
		}
		return out.MetricAlarms[0]
	}
	got := describe()
	if diff := cmp.Diff([]string{"arn:aws:automate:" + s.Region + ":ec2:stop"}, got.AlarmActions); diff != "" {
		t.Errorf("AlarmActions (-want +got):\n%s", diff)
	}
	if got.StateValue != types.StateValueInsufficientData || *got.TreatMissingData != "missing" || *got.DatapointsToAlarm != 15 ||
		*got.Period != 60 || *got.MetricName != "SSH Connections" || !*got.ActionsEnabled || !got.StateUpdatedTimestamp.Equal(cwStart) {
		t.Errorf("described %+v", got)
	}

	fc.Advance(20 * time.Minute)
	s.SetAlarmState(name, "ALARM", "Threshold Crossed: 15 out of the last 15 datapoints were less than or equal to the threshold (0.0)")
	if got := describe(); got.StateValue != types.StateValueAlarm {
		t.Fatalf("state %s, want ALARM", got.StateValue)
	}
	if _, err := client.SetAlarmState(t.Context(), &cloudwatch.SetAlarmStateInput{AlarmName: aws.String(name), StateValue: types.StateValueOk, StateReason: aws.String("reset")}); err != nil {
		t.Fatalf("SetAlarmState: %v", err)
	}
	a, _ = s.Alarm(name)
	want := []awstest.AlarmStateChange{
		{Time: cwStart.Add(20 * time.Minute), From: "INSUFFICIENT_DATA", To: "ALARM", Reason: a.History[0].Reason, Actions: []string{"arn:aws:automate:" + s.Region + ":ec2:stop"}},
		{Time: cwStart.Add(20 * time.Minute), From: "ALARM", To: "OK", Reason: "reset"},
	}
	if diff := cmp.Diff(want, a.History); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}

	// Updating keeps the state and replaces the configuration.
	in.EvaluationPeriods, in.DatapointsToAlarm = aws.Int32(30), aws.Int32(30)
	if _, err := client.PutMetricAlarm(t.Context(), in); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got := describe(); got.StateValue != types.StateValueOk || *got.EvaluationPeriods != 30 {
		t.Errorf("after update: %s, %d periods", got.StateValue, *got.EvaluationPeriods)
	}

	_, err := client.SetAlarmState(t.Context(), &cloudwatch.SetAlarmStateInput{AlarmName: aws.String("nope"), StateValue: types.StateValueOk, StateReason: aws.String("x")})
	var rnf *types.ResourceNotFound
	if !errors.As(err, &rnf) || apiCode(err) != "ResourceNotFound" {
		t.Errorf("SetAlarmState of unknown alarm: %v (%T)", err, err)
	}
}

func TestPutMetricAlarmValidation(t *testing.T) {
	s, _, client := newCloudWatch(t)
	base := func() *cloudwatch.PutMetricAlarmInput {
		return &cloudwatch.PutMetricAlarmInput{
			AlarmName: aws.String("a"), Namespace: aws.String("EC2"), MetricName: aws.String("SSH Connections"),
			Dimensions: []types.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(s.InstanceID)}},
			Statistic:  types.StatisticMaximum, Period: aws.Int32(60), EvaluationPeriods: aws.Int32(15),
			Threshold: aws.Float64(0), ComparisonOperator: types.ComparisonOperatorLessThanOrEqualToThreshold,
			AlarmActions: []string{"arn:aws:automate:" + s.Region + ":ec2:stop"},
		}
	}
	tests := []struct {
		name   string
		change func(*cloudwatch.PutMetricAlarmInput)
		code   string
	}{
		{"M > N", func(in *cloudwatch.PutMetricAlarmInput) { in.DatapointsToAlarm = aws.Int32(16) }, "InvalidParameterValue"},
		{"too long", func(in *cloudwatch.PutMetricAlarmInput) { in.EvaluationPeriods = aws.Int32(1441) }, "InvalidParameterValue"},
		{"other region", func(in *cloudwatch.PutMetricAlarmInput) {
			in.AlarmActions = []string{"arn:aws:automate:us-east-1:ec2:stop"}
		}, "ValidationError"},
		{"hibernate", func(in *cloudwatch.PutMetricAlarmInput) {
			in.AlarmActions = []string{"arn:aws:automate:" + s.Region + ":ec2:hibernate"}
		}, "InvalidParameterValue"},
		{"no InstanceId", func(in *cloudwatch.PutMetricAlarmInput) { in.Dimensions = nil }, "ValidationError"},
		{"bad missing-data", func(in *cloudwatch.PutMetricAlarmInput) { in.TreatMissingData = aws.String("zero") }, "InvalidParameterValue"},
		{"math with EC2 action", func(in *cloudwatch.PutMetricAlarmInput) {
			in.MetricName, in.Namespace, in.Statistic, in.Period = nil, nil, "", nil
			in.Metrics = []types.MetricDataQuery{
				{Id: aws.String("m1"), ReturnData: aws.Bool(false), MetricStat: &types.MetricStat{Period: aws.Int32(300), Stat: aws.String("Maximum"),
					Metric: &types.Metric{Namespace: aws.String("AWS/ClientVPN"), MetricName: aws.String("ActiveConnectionsCount")}}},
				{Id: aws.String("e1"), Expression: aws.String("DIFF(m1)"), ReturnData: aws.Bool(true)},
			}
		}, "ValidationError"},
	}
	for _, tt := range tests {
		in := base()
		tt.change(in)
		if _, err := client.PutMetricAlarm(t.Context(), in); apiCode(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	if _, ok := s.Alarm("a"); ok {
		t.Error("a refused alarm was stored")
	}
}
