package cloudwatch_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
)

// TestIdleAlarmBounds: PutMetricAlarm's limits on N × Period, checked
// without overflow. 307445734561825861 periods of 1m once passed (60 × N
// wraps to 44 seconds) and became an int32 of 1145324613.
func TestIdleAlarmBounds(t *testing.T) {
	base := cloudwatch.IdleAlarm{InstanceID: "i-1", Region: "eu-west-1"}
	for _, tt := range []struct {
		period time.Duration
		n      int
		ok     bool
	}{
		{time.Minute, 1440, true},
		{time.Minute, 1441, false},
		{10 * time.Second, 8640, true},
		{10 * time.Second, 8641, false},
		{time.Hour, 168, true},
		{time.Hour, 169, false},
		{7 * 24 * time.Hour, 1, true},
		{8 * 24 * time.Hour, 1, false},
		{time.Minute, 307445734561825861, false},
		{time.Minute, math.MaxInt, false},
		{time.Hour, math.MaxInt, false},
		{time.Minute, -1, false},
	} {
		a := base
		a.Period, a.EvaluationPeriods, a.DatapointsToAlarm = tt.period, tt.n, 1
		in, err := a.Input()
		if tt.ok && (err != nil || int(*in.EvaluationPeriods) != tt.n) {
			t.Errorf("%d periods of %v: %v", tt.n, tt.period, err)
		}
		if !tt.ok && !errors.Is(err, cloudwatch.ErrInvalidAlarm) {
			t.Errorf("%d periods of %v: got %v, want ErrInvalidAlarm", tt.n, tt.period, err)
		}
	}
}

// TestClientVPNAlarmTopicName: SNS topic names are 1 to 256 characters.
func TestClientVPNAlarmTopicName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"alerts", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
		{"", false},
		{"a.b", false},
	} {
		a := cloudwatch.ClientVPNAlarm{Endpoint: "cvpn-endpoint-0123456789abcdef0", Region: "eu-west-1",
			SNSTopic: "arn:aws:sns:eu-west-1:123456789012:" + tt.name}
		_, err := a.Input()
		if tt.ok && err != nil {
			t.Errorf("topic name of %d bytes: %v", len(tt.name), err)
		}
		if !tt.ok && !errors.Is(err, cloudwatch.ErrInvalidAlarm) {
			t.Errorf("topic name %.20q (%d bytes): got %v, want ErrInvalidAlarm", tt.name, len(tt.name), err)
		}
	}
}
