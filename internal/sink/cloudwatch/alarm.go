package cloudwatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cwapi "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
)

// Errors ResetAlarmIfStuck and the alarm builders return.
var (
	ErrAlarmNotFound = errors.New("alarm not found")
	// ErrAlarmMismatch: the alarm watches another metric or instance than
	// this publisher publishes, so it is not connwatch's to reset.
	ErrAlarmMismatch = errors.New("alarm does not watch this publisher's metric")
	// ErrHibernateAction: CloudWatch has no hibernate alarm action.
	ErrHibernateAction = errors.New("CloudWatch alarms cannot hibernate an instance: there is no hibernate alarm action (hibernation is StopInstances with Hibernate=true); use stop, or let the connwatch agent hibernate the instance itself (action ec2-hibernate)")
	ErrInvalidAlarm    = errors.New("invalid alarm")
)

// DefaultAlarmName is the name `connwatch aws setup-alarm` gives the idle
// alarm of an instance.
func DefaultAlarmName(instanceID string) string { return "connwatch-idle-" + instanceID }

// ResetAlarmIfStuck is for agent start. An alarm runs its actions only
// when its state changes: after it stopped the instance it stays in ALARM
// (no data comes while the instance is stopped), and when someone starts
// the instance again and leaves it idle, the alarm never leaves ALARM and
// never stops it again. If the named alarm (default: DefaultAlarmName of
// this instance) is in ALARM, ResetAlarmIfStuck sets it to OK with
// SetAlarmState and a reason, so that its next evaluation can go to ALARM
// again and stop the instance. It reports whether it reset the alarm.
//
// It leaves the alarm alone when it is not in ALARM, and when the alarm
// treats missing data as breaching: such an alarm counts the minutes the
// instance was stopped as idle, so set to OK it would stop the instance
// again within a minute of boot; it leaves ALARM by itself once someone
// connects. The alarm must watch this publisher's metric for this
// instance (ErrAlarmMismatch otherwise); ErrAlarmNotFound when it does not
// exist. Setting OK runs the alarm's OK actions, if it has any. IAM:
// cloudwatch:DescribeAlarms and cloudwatch:SetAlarmState.
func (p *Publisher) ResetAlarmIfStuck(ctx context.Context, alarmName string) (bool, error) {
	if err := p.resolve(ctx); err != nil {
		return false, fmt.Errorf("reset alarm: %w", err)
	}
	tg := p.currentTarget()
	if alarmName == "" {
		alarmName = DefaultAlarmName(tg.instanceID)
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.CallTimeout)
	defer cancel()
	out, err := tg.api.DescribeAlarms(ctx, &cwapi.DescribeAlarmsInput{
		AlarmNames: []string{alarmName},
		AlarmTypes: []types.AlarmType{types.AlarmTypeMetricAlarm},
	})
	if err != nil {
		return false, fmt.Errorf("reset alarm %s: describe: %w", alarmName, err)
	}
	var a *types.MetricAlarm
	for i := range out.MetricAlarms {
		if aws.ToString(out.MetricAlarms[i].AlarmName) == alarmName {
			a = &out.MetricAlarms[i]
		}
	}
	if a == nil {
		return false, fmt.Errorf("reset alarm %s: %w", alarmName, ErrAlarmNotFound)
	}
	if err := p.watches(a, tg); err != nil {
		return false, fmt.Errorf("reset alarm %s: %w", alarmName, err)
	}
	log := p.log.With("alarm", alarmName)
	if a.StateValue != types.StateValueAlarm {
		log.Debug("alarm not stuck", "state", a.StateValue)
		return false, nil
	}
	if aws.ToString(a.TreatMissingData) == "breaching" {
		log.Warn("alarm is in ALARM but treats missing data as breaching: not resetting it, since it would count the time the instance was stopped and stop it again at once; it returns to OK when someone connects")
		return false, nil
	}
	now := p.clk.Now().UTC()
	reason := fmt.Sprintf("connwatch started on %s at %s while this alarm was in ALARM. "+
		"Alarm actions run only when the state changes, so it is set to OK to be able to stop the instance again when it is idle.",
		tg.instanceID, now.Format(time.RFC3339))
	data, _ := json.Marshal(map[string]string{
		"resetBy": "connwatch", "instanceId": tg.instanceID, "previousState": string(a.StateValue),
		"previousStateUpdated": aws.ToTime(a.StateUpdatedTimestamp).UTC().Format(time.RFC3339),
	})
	if _, err := tg.api.SetAlarmState(ctx, &cwapi.SetAlarmStateInput{
		AlarmName:       aws.String(alarmName),
		StateValue:      types.StateValueOk,
		StateReason:     aws.String(reason),
		StateReasonData: aws.String(string(data)),
	}); err != nil {
		return false, fmt.Errorf("reset alarm %s: set state: %w", alarmName, err)
	}
	log.Info("alarm was stuck in ALARM; set it to OK so that it can act again", "since", aws.ToTime(a.StateUpdatedTimestamp).UTC())
	return true, nil
}

// watches checks that a is on this publisher's metric and instance.
func (p *Publisher) watches(a *types.MetricAlarm, tg *target) error {
	if aws.ToString(a.Namespace) != p.o.Namespace || aws.ToString(a.MetricName) != p.o.MetricName {
		return fmt.Errorf("it watches %s/%s, not %s/%s: %w", aws.ToString(a.Namespace), aws.ToString(a.MetricName),
			p.o.Namespace, p.o.MetricName, ErrAlarmMismatch)
	}
	for _, d := range a.Dimensions {
		if aws.ToString(d.Name) == InstanceIDDimension && aws.ToString(d.Value) != tg.instanceID {
			return fmt.Errorf("it watches instance %s, not %s: %w", aws.ToString(d.Value), tg.instanceID, ErrAlarmMismatch)
		}
	}
	return nil
}

// Alarm actions of an idle alarm.
const (
	ActionStop      = "stop"
	ActionTerminate = "terminate"
	ActionReboot    = "reboot"
)

// Missing-data treatments.
const (
	TreatMissing      = "missing"
	TreatBreaching    = "breaching"
	TreatNotBreaching = "notBreaching"
	TreatIgnore       = "ignore"
)

// IdleAlarm is the classic recipe's alarm: the instance is stopped when
// the maximum number of SSH sessions is <= 0 for DatapointsToAlarm of the
// last EvaluationPeriods periods.
type IdleAlarm struct {
	// Name defaults to DefaultAlarmName(InstanceID).
	Name       string
	InstanceID string
	Region     string
	// Namespace, MetricName and Dimensions must be what the agent
	// publishes (defaults EC2, SSH Connections, none beyond InstanceId).
	Namespace  string
	MetricName string
	Dimensions map[string]string
	// Period defaults to one minute.
	Period time.Duration
	// EvaluationPeriods (N) defaults to 15, DatapointsToAlarm (M) to N.
	EvaluationPeriods int
	DatapointsToAlarm int
	// Action is stop (default), terminate or reboot.
	Action string
	// TreatMissingData defaults to missing.
	TreatMissingData string
}

// maxEvaluationPeriods is PutMetricAlarm's bound on EvaluationPeriods for
// a period of secs seconds: Period × EvaluationPeriods is at most one day
// for periods shorter than an hour, seven days otherwise. Dividing, not
// multiplying, so that a huge count cannot overflow past the check (and
// then be truncated to an int32).
func maxEvaluationPeriods(secs int) int {
	if secs <= 0 {
		return 0
	}
	if secs < 3600 {
		return 86400 / secs
	}
	return 604800 / secs
}

// Input returns the PutMetricAlarm input, or an error wrapping
// ErrInvalidAlarm (or ErrHibernateAction).
func (a IdleAlarm) Input() (*cwapi.PutMetricAlarmInput, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidAlarm)
	}
	a.Namespace = cmp.Or(a.Namespace, DefaultNamespace)
	a.MetricName = cmp.Or(a.MetricName, DefaultMetricName)
	a.Period = cmp.Or(a.Period, DefaultPeriod)
	a.EvaluationPeriods = cmp.Or(a.EvaluationPeriods, 15)
	a.DatapointsToAlarm = cmp.Or(a.DatapointsToAlarm, a.EvaluationPeriods)
	a.Action = cmp.Or(a.Action, ActionStop)
	a.TreatMissingData = cmp.Or(a.TreatMissingData, TreatMissing)
	a.Name = cmp.Or(a.Name, DefaultAlarmName(a.InstanceID))
	secs := int(a.Period / time.Second)
	switch {
	case !strings.HasPrefix(a.InstanceID, "i-"):
		return nil, bad("instance id %q: want i-...", a.InstanceID)
	case a.Region == "":
		return nil, bad("region is required")
	case a.Action == "hibernate":
		return nil, ErrHibernateAction
	case !slices.Contains([]string{ActionStop, ActionTerminate, ActionReboot}, a.Action):
		return nil, bad("action %q: want stop, terminate or reboot", a.Action)
	case !slices.Contains([]string{TreatMissing, TreatBreaching, TreatNotBreaching, TreatIgnore}, a.TreatMissingData):
		return nil, bad("treat missing data %q: want missing, breaching, notBreaching or ignore", a.TreatMissingData)
	case a.Period%time.Second != 0 || secs != 10 && secs != 30 && (secs < 60 || secs%60 != 0):
		return nil, bad("period %v: an alarm's period is 10s, 30s or a multiple of 1m", a.Period)
	case a.EvaluationPeriods < 1 || a.EvaluationPeriods > maxEvaluationPeriods(secs):
		return nil, bad("%d evaluation periods of %v: must be at least 1 and span at most a day (seven days for periods of an hour or more)", a.EvaluationPeriods, a.Period)
	case a.DatapointsToAlarm < 1 || a.DatapointsToAlarm > a.EvaluationPeriods:
		return nil, bad("datapoints to alarm %d: must be between 1 and the evaluation periods (%d)", a.DatapointsToAlarm, a.EvaluationPeriods)
	case len(a.Name) > 255:
		return nil, bad("alarm name %q: at most 255 characters", a.Name)
	}
	window := time.Duration(a.EvaluationPeriods) * a.Period
	desc := fmt.Sprintf("connwatch: %s %s when nobody is connected over SSH: the maximum of %s/%s is 0 in %d of the last %d periods of %v (%v). "+
		"The connwatch agent publishes the metric; missing data is treated as %s. Made by `connwatch aws setup-alarm`.",
		a.Action, a.InstanceID, a.Namespace, a.MetricName, a.DatapointsToAlarm, a.EvaluationPeriods, a.Period, window, a.TreatMissingData)
	return &cwapi.PutMetricAlarmInput{
		AlarmName:          aws.String(a.Name),
		AlarmDescription:   aws.String(desc),
		ActionsEnabled:     aws.Bool(true),
		AlarmActions:       []string{EC2ActionARN(a.Region, a.Action)},
		Namespace:          aws.String(a.Namespace),
		MetricName:         aws.String(a.MetricName),
		Dimensions:         dimensions(a.InstanceID, a.Dimensions),
		Statistic:          types.StatisticMaximum,
		Period:             aws.Int32(int32(secs)),
		EvaluationPeriods:  aws.Int32(int32(a.EvaluationPeriods)),
		DatapointsToAlarm:  aws.Int32(int32(a.DatapointsToAlarm)),
		Threshold:          aws.Float64(0),
		ComparisonOperator: types.ComparisonOperatorLessThanOrEqualToThreshold,
		TreatMissingData:   aws.String(a.TreatMissingData),
	}, nil
}

// EC2ActionARN is the alarm action that stops, terminates or reboots the
// instance of the alarm's InstanceId dimension.
func EC2ActionARN(region, action string) string {
	return fmt.Sprintf("arn:%s:automate:%s:ec2:%s", partition(region), region, action)
}

func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// topicARN leaves the name's limit of 256 to checkTopic: a counted
// repetition {1,256} compiles to 256 copies, 1 ms at every start.
var topicARN = regexp.MustCompile(`^arn:aws[a-z-]*:sns:([a-z0-9-]+):[0-9]{12}:([A-Za-z0-9_-]+)$`)

func checkTopic(arn, region string) error {
	m := topicARN.FindStringSubmatch(arn)
	if m == nil || len(m[2]) > 256 {
		return fmt.Errorf("SNS topic %q: want arn:aws:sns:REGION:ACCOUNT:NAME: %w", arn, ErrInvalidAlarm)
	}
	if m[1] != region {
		return fmt.Errorf("SNS topic %q is in %s: an alarm in %s can only notify topics in its own region: %w", arn, m[1], region, ErrInvalidAlarm)
	}
	return nil
}

var clientVPNEndpoint = regexp.MustCompile(`^cvpn-endpoint-[0-9a-f]{8,17}$`)

// ClientVPNAlarm notifies an SNS topic when new connections appear on an
// AWS Client VPN endpoint. Client VPN publishes ActiveConnectionsCount
// (namespace AWS/ClientVPN, dimension Endpoint) every five minutes; the
// alarm watches DIFF of its maximum, the change since the previous
// five-minute datapoint, and goes to ALARM when it is >= 1. It sees net
// increases only: a connection that comes and goes within five minutes,
// or one new connection while another ends, goes unnoticed. An alarm on
// metric math cannot take EC2 actions, so this one only notifies.
type ClientVPNAlarm struct {
	// Name defaults to connwatch-client-vpn-ENDPOINT.
	Name     string
	Endpoint string
	Region   string
	SNSTopic string
}

// Input returns the PutMetricAlarm input, or an error wrapping
// ErrInvalidAlarm.
func (a ClientVPNAlarm) Input() (*cwapi.PutMetricAlarmInput, error) {
	if !clientVPNEndpoint.MatchString(a.Endpoint) {
		return nil, fmt.Errorf("client VPN endpoint %q: want cvpn-endpoint-<hex>: %w", a.Endpoint, ErrInvalidAlarm)
	}
	if a.Region == "" {
		return nil, fmt.Errorf("region is required: %w", ErrInvalidAlarm)
	}
	if a.SNSTopic == "" {
		return nil, fmt.Errorf("an SNS topic is required: an alarm on metric math cannot take EC2 actions, it can only notify: %w", ErrInvalidAlarm)
	}
	if err := checkTopic(a.SNSTopic, a.Region); err != nil {
		return nil, err
	}
	a.Name = cmp.Or(a.Name, "connwatch-client-vpn-"+a.Endpoint)
	return &cwapi.PutMetricAlarmInput{
		AlarmName: aws.String(a.Name),
		AlarmDescription: aws.String(fmt.Sprintf("connwatch: new connections on AWS Client VPN endpoint %s: "+
			"DIFF of the maximum ActiveConnectionsCount per 5 minutes is >= 1 (net increases only). Made by `connwatch aws setup-alarm`.", a.Endpoint)),
		ActionsEnabled: aws.Bool(true),
		AlarmActions:   []string{a.SNSTopic},
		Metrics: []types.MetricDataQuery{
			{
				Id: aws.String("connections"),
				MetricStat: &types.MetricStat{
					Metric: &types.Metric{
						Namespace:  aws.String("AWS/ClientVPN"),
						MetricName: aws.String("ActiveConnectionsCount"),
						Dimensions: []types.Dimension{{Name: aws.String("Endpoint"), Value: aws.String(a.Endpoint)}},
					},
					Period: aws.Int32(300),
					Stat:   aws.String("Maximum"),
				},
				ReturnData: aws.Bool(false),
			},
			{
				Id:         aws.String("new_connections"),
				Expression: aws.String("DIFF(connections)"),
				Label:      aws.String("New Client VPN connections"),
				ReturnData: aws.Bool(true),
			},
		},
		EvaluationPeriods:  aws.Int32(1),
		DatapointsToAlarm:  aws.Int32(1),
		Threshold:          aws.Float64(1),
		ComparisonOperator: types.ComparisonOperatorGreaterThanOrEqualToThreshold,
		TreatMissingData:   aws.String(TreatNotBreaching),
	}, nil
}
