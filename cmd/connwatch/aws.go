package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	cwapi "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
)

func newAWSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aws",
		Short: "Set up the AWS side: the CloudWatch alarm that stops an idle instance",
		Long: `aws works with the AWS resources around connwatch: setup-alarm creates
or updates the CloudWatch alarm that stops this instance when nobody is
connected (the classic recipe's alarm on EC2/SSH Connections, which the
agent publishes).`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newAWSSetupAlarmCmd())
	return cmd
}

// setupAlarmFlags are the flags of aws setup-alarm.
type setupAlarmFlags struct {
	alarmName, instanceID, region string
	namespace, metricName         string
	dimensions                    []string
	period                        time.Duration
	n, m                          int
	action, treatMissing          string
	vpnEndpoint, snsTopic         string
	vpnAlarmName                  string
	dryRun                        bool
}

func newAWSSetupAlarmCmd() *cobra.Command {
	var f setupAlarmFlags
	cmd := &cobra.Command{
		Use:   "setup-alarm [flags]",
		Short: "Create or update the CloudWatch alarm that stops this instance when idle",
		Long: `setup-alarm creates the CloudWatch alarm of the classic "stop idle EC2
instances" recipe, or updates it to the flags given (PutMetricAlarm
replaces an existing alarm's configuration whole and keeps its state):

  metric     EC2 / SSH Connections, dimension InstanceId=<this instance>,
             statistic Maximum, period 1 minute: what 'connwatch agent'
             publishes with its CloudWatch sink
  condition  <= 0 (LessThanOrEqualToThreshold 0) for M of the last N
             periods (--datapoints-to-alarm, --evaluation-periods; 15 of 15)
  action     arn:aws:automate:REGION:ec2:stop (--action stop, terminate or
             reboot)
  name       connwatch-idle-<instance-id>

The instance id and region come from the instance metadata service
(IMDSv2) unless --instance-id and --region are given: run it on the
instance, or anywhere with both flags.

Maximum, not Average: the agent sends, for each minute, the most
sessions that existed at any time in it; if a minute ever gets two values
(an agent restart), the larger one counts.

There is no hibernate alarm action: EC2 alarm actions are stop, terminate,
reboot and recover, and hibernation is a StopInstances call with
Hibernate=true that no alarm can make. To hibernate, let the agent do it
(action ec2-hibernate) and do not create this alarm, or use --action stop
here as a backstop.

Missing data (--treat-missing-data). A minute without a datapoint means
the agent is not publishing: it is stopped or crashed, the instance is
hung or stopped, or CloudWatch cannot be reached.
  missing (default)  missing minutes do not count. The alarm decides on
        the datapoints it has: with 15 of 15, it fires after 15 minutes
        that really were idle. A dead agent never stops the instance
        (keep the agent alive with systemd Restart=always); but neither
        does an outage of CloudWatch or of the network, nor an IAM
        mistake, stop an instance someone is using.
  breaching  every missing minute counts as idle, so a dead agent still
        stops the instance. The price: an instance in use is stopped when
        publishing fails for N minutes (network, CloudWatch, credentials);
        and after the alarm stopped the instance it stays in ALARM, so after
        a manual start it stops the instance again only once someone has
        connected and left (reset to OK at boot, it would count the stopped
        minutes as idle and stop the instance within a minute).
  notBreaching  missing minutes count as in use: like missing, and the
        alarm stays OK rather than going to INSUFFICIENT_DATA.
  ignore  the alarm keeps its state while data is missing.
The default is missing: never stop a machine in use because of a fault
elsewhere.

An alarm acts only when its state changes. After it stopped the instance
it stays in ALARM; when someone starts the instance again, the agent's
CloudWatch sink can set it back to OK at start, so that it can stop the
instance again (not for breaching, see above).

--client-vpn-endpoint also creates an alarm on new AWS Client VPN
connections: DIFF of the endpoint's maximum ActiveConnectionsCount
(AWS/ClientVPN, dimension Endpoint, published every 5 minutes) >= 1,
notifying --sns-topic (required with it). It sees net increases only, at
a 5-minute grain. Alarms on metric math cannot take EC2 actions, so this
one only notifies.

--dry-run prints the exact PutMetricAlarm input of each alarm as JSON
(usable with aws cloudwatch put-metric-alarm --cli-input-json) and changes
nothing.

IAM: cloudwatch:PutMetricAlarm; the first alarm with an EC2 action in an
account creates the service-linked role AWSServiceRoleForCloudWatchEvents,
which needs iam:CreateServiceLinkedRole. The agent's sink needs
cloudwatch:PutMetricData, and cloudwatch:DescribeAlarms and
cloudwatch:SetAlarmState for the reset. To wake a stopped instance from
your own machine, 'connwatch connect' (an ssh ProxyCommand) needs the
minimal policy ec2:DescribeInstances and ec2:StartInstances, plus
ec2:CreateTags for its --hold (see 'connwatch connect --help').

Exit status: 0 when the alarms were saved (or printed), 1 when AWS
refused or could not be reached, 2 on usage errors.`,
		Example: `  # on the instance: the classic alarm, 15 idle minutes of 15
  connwatch aws setup-alarm

  # see what would be sent
  connwatch aws setup-alarm --dry-run

  # from elsewhere, 30 minutes, terminate
  connwatch aws setup-alarm --instance-id i-0123456789abcdef0 --region eu-west-1 \
      --evaluation-periods 30 --action terminate

  # also tell a topic about new Client VPN connections
  connwatch aws setup-alarm --client-vpn-endpoint cvpn-endpoint-0123456789abcdef0 \
      --sns-topic arn:aws:sns:eu-west-1:123456789012:vpn-logins`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("aws setup-alarm takes no arguments, got %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSetupAlarm(cmd.Context(), cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.alarmName, "alarm-name", "", "alarm name (default connwatch-idle-<instance-id>)")
	fl.StringVar(&f.instanceID, "instance-id", "", "instance to stop (default: this instance, from IMDS)")
	fl.StringVar(&f.region, "region", "", "region of the instance and alarm (default: from IMDS)")
	fl.StringVar(&f.namespace, "namespace", cloudwatch.DefaultNamespace, "metric namespace, as the agent publishes it")
	fl.StringVar(&f.metricName, "metric-name", cloudwatch.DefaultMetricName, "metric name, as the agent publishes it")
	fl.StringArrayVar(&f.dimensions, "dimension", nil, "extra metric dimension NAME=VALUE, as the agent publishes it (repeatable)")
	fl.DurationVar(&f.period, "period", cloudwatch.DefaultPeriod, "alarm period: 10s, 30s or a multiple of 1m (the agent's period)")
	fl.IntVar(&f.n, "evaluation-periods", 15, "N, the periods the alarm looks at")
	fl.IntVar(&f.m, "datapoints-to-alarm", 0, "M, how many of the N must be idle (default N)")
	fl.StringVar(&f.action, "action", cloudwatch.ActionStop, "EC2 action: stop, terminate or reboot (there is no hibernate alarm action)")
	fl.StringVar(&f.treatMissing, "treat-missing-data", cloudwatch.TreatMissing, "missing, breaching, notBreaching or ignore (see above)")
	fl.StringVar(&f.vpnEndpoint, "client-vpn-endpoint", "", "also alarm on new connections to this AWS Client VPN endpoint (cvpn-endpoint-...)")
	fl.StringVar(&f.snsTopic, "sns-topic", "", "SNS topic ARN the Client VPN alarm notifies (required with --client-vpn-endpoint)")
	fl.StringVar(&f.vpnAlarmName, "vpn-alarm-name", "", "Client VPN alarm name (default connwatch-client-vpn-<endpoint>)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the PutMetricAlarm input as JSON and change nothing")
	return cmd
}

func runSetupAlarm(ctx context.Context, cmd *cobra.Command, f setupAlarmFlags) error {
	flags := cmd.Flags()
	dims := map[string]string{}
	for _, d := range f.dimensions {
		k, v, ok := strings.Cut(d, "=")
		if !ok || k == "" || v == "" {
			return usagef("--dimension %q: want NAME=VALUE", d)
		}
		dims[k] = v
	}
	if f.action == "hibernate" {
		return usagef("--action hibernate: %w", cloudwatch.ErrHibernateAction)
	}
	if f.snsTopic != "" && f.vpnEndpoint == "" {
		return usagef("--sns-topic goes with --client-vpn-endpoint")
	}
	if f.vpnEndpoint != "" && f.snsTopic == "" {
		return usagef("--client-vpn-endpoint needs --sns-topic: an alarm on metric math cannot take EC2 actions, it can only notify")
	}
	if flags.Changed("datapoints-to-alarm") && f.m < 1 {
		return usagef("--datapoints-to-alarm %d: must be at least 1", f.m)
	}
	if f.instanceID != "" && !strings.HasPrefix(f.instanceID, "i-") {
		return usagef("--instance-id %q: want i-...", f.instanceID)
	}
	// Check what needs no AWS before asking IMDS anything.
	probe := cloudwatch.IdleAlarm{
		Name: f.alarmName, InstanceID: "i-0", Region: "us-east-1",
		Namespace: f.namespace, MetricName: f.metricName, Dimensions: dims, Period: f.period,
		EvaluationPeriods: f.n, DatapointsToAlarm: f.m, Action: f.action, TreatMissingData: f.treatMissing,
	}
	if _, err := probe.Input(); err != nil {
		return usagef("%w", err)
	}

	loaded, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS config: %w", err)
	}
	id, region, err := instanceAndRegion(ctx, loaded, f.instanceID, f.region)
	if err != nil {
		return err
	}
	idle := probe
	idle.InstanceID, idle.Region = id, region
	in, err := idle.Input()
	if err != nil {
		return usagef("%w", err)
	}
	inputs := []*cwapi.PutMetricAlarmInput{in}
	if f.vpnEndpoint != "" {
		vpn, err := cloudwatch.ClientVPNAlarm{Name: f.vpnAlarmName, Endpoint: f.vpnEndpoint, Region: region, SNSTopic: f.snsTopic}.Input()
		if err != nil {
			return usagef("%w", err)
		}
		inputs = append(inputs, vpn)
	}

	out := cmd.OutOrStdout()
	if f.dryRun {
		for _, in := range inputs {
			if err := writeAPIJSON(out, in); err != nil {
				return err
			}
		}
		return nil
	}
	client := cwapi.NewFromConfig(loaded, func(o *cwapi.Options) { o.Region = region })
	for _, in := range inputs {
		if _, err := client.PutMetricAlarm(ctx, in); err != nil {
			return fmt.Errorf("put alarm %s: %w", aws.ToString(in.AlarmName), err)
		}
		fmt.Fprintf(out, "alarm %s saved in %s: %s\n", aws.ToString(in.AlarmName), region, describeAlarm(in))
	}
	return nil
}

// instanceAndRegion fills what the flags left out from IMDS. With
// --instance-id but no --region, the SDK's configured region is used when
// there is one: the instance may be elsewhere.
func instanceAndRegion(ctx context.Context, cfg aws.Config, id, region string) (string, string, error) {
	if id != "" && region == "" {
		region = cfg.Region
	}
	if id != "" && region != "" {
		return id, region, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	doc, err := imds.NewFromConfig(cfg).GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		return "", "", fmt.Errorf("read instance identity from IMDS (not on EC2? give --instance-id and --region): %w", err)
	}
	if id == "" {
		id = doc.InstanceID
	}
	if region == "" {
		region = doc.Region
	}
	if id == "" || region == "" {
		return "", "", errors.New("read instance identity from IMDS: no instance id or region; give --instance-id and --region")
	}
	return id, region, nil
}

func describeAlarm(in *cwapi.PutMetricAlarmInput) string {
	if len(in.Metrics) > 0 {
		return fmt.Sprintf("%s when %s >= %g", strings.Join(in.AlarmActions, ", "),
			aws.ToString(in.Metrics[len(in.Metrics)-1].Expression), aws.ToFloat64(in.Threshold))
	}
	return fmt.Sprintf("%s when %s/%s <= 0 for %d of %d periods of %ds (missing data: %s)",
		strings.Join(in.AlarmActions, ", "), aws.ToString(in.Namespace), aws.ToString(in.MetricName),
		aws.ToInt32(in.DatapointsToAlarm), aws.ToInt32(in.EvaluationPeriods), aws.ToInt32(in.Period),
		aws.ToString(in.TreatMissingData))
}

// writeAPIJSON writes an SDK input as the API's JSON: member names as
// keys, unset members left out.
func writeAPIJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	b, err = json.MarshalIndent(prune(tree), "", "  ")
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// prune drops nulls, empty strings and empty lists and objects.
func prune(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			e = prune(e)
			if empty(e) {
				delete(v, k)
				continue
			}
			v[k] = e
		}
		return v
	case []any:
		out := v[:0]
		for _, e := range v {
			if e = prune(e); !empty(e) {
				out = append(out, e)
			}
		}
		return out
	}
	return v
}

func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}
