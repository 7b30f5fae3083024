package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/smithy-go"

	"github.com/connwatch/connwatch/internal/outbox"
)

// SNS message attributes set on every message, for subscription filter
// policies.
const (
	AttrEventType  = "event_type"
	AttrHost       = "host"
	AttrInstanceID = "instance_id"
)

// SNSOptions configure an SNS sink.
type SNSOptions struct {
	// Name names the sink (and its outbox); default "sns".
	Name string
	// TopicARN is the topic to publish to. Its region is the one used,
	// whatever AWS_REGION says. A FIFO topic (name ending in .fifo) gets
	// MessageGroupId = host and MessageDeduplicationId = Message.Key.
	TopicARN string
	// Timeout bounds one Publish; zero means DefaultTimeout.
	Timeout time.Duration
	// AWSConfig are extra options for config.LoadDefaultConfig. Without
	// them the SDK's standard settings apply: the default credential
	// chain, AWS_ENDPOINT_URL_SNS and AWS_ENDPOINT_URL, shared config.
	AWSConfig []func(*config.LoadOptions) error
}

// SNS publishes each message to an SNS topic. The SDK does not retry: the
// outbox does, with its own backoff. A Publish the topic refuses as
// invalid (InvalidParameter, ParameterValueInvalid, ValidationException)
// is a permanent failure; everything else (throttling, authorization,
// missing topic, KMS, network) is retried, since a fix to the topic or its
// policy makes the same message go through.
type SNS struct {
	name, topic string
	fifo        bool
	timeout     time.Duration
	// snsPublish is the client's method value, not the *sns.Client, which
	// an interface can reach through SNS and would then keep every SNS
	// operation in the binary (see connect.SDK).
	snsPublish func(context.Context, *sns.PublishInput, ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// NewSNS checks o and loads the AWS configuration (no network: the
// credentials are fetched at the first Publish).
func NewSNS(ctx context.Context, o SNSOptions) (*SNS, error) {
	if o.Name == "" {
		o.Name = "sns"
	}
	a, err := arn.Parse(o.TopicARN)
	if err != nil || a.Service != "sns" || a.Region == "" || a.Resource == "" {
		return nil, fmt.Errorf("sns %s: topic %q is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC): %w", o.Name, o.TopicARN, ErrInvalidConfig)
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("sns %s: negative timeout %s: %w", o.Name, o.Timeout, ErrInvalidConfig)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	cfg, err := config.LoadDefaultConfig(ctx, o.AWSConfig...)
	if err != nil {
		return nil, fmt.Errorf("sns %s: load AWS config: %w", o.Name, err)
	}
	client := sns.NewFromConfig(cfg, func(so *sns.Options) {
		so.Region = a.Region
		so.RetryMaxAttempts = 1
	})
	return &SNS{
		name: o.Name, topic: o.TopicARN, fifo: strings.HasSuffix(a.Resource, ".fifo"),
		timeout: o.Timeout, snsPublish: client.Publish,
	}, nil
}

// Name is the sink's name.
func (s *SNS) Name() string { return s.name }

// Format returns the Publish request for m: Subject(m); a message that is
// Text(m), a blank line and the Message as indented JSON; attributes for
// the event type, host and instance; and for FIFO topics the group (host)
// and deduplication id (m.Key).
func (s *SNS) Format(m Message) (*sns.PublishInput, error) {
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("format sns message: %w", err)
	}
	in := &sns.PublishInput{
		TopicArn: aws.String(s.topic),
		Subject:  aws.String(Subject(m)),
		Message:  aws.String(Text(m) + "\n\n" + string(js)),
		MessageAttributes: map[string]types.MessageAttributeValue{
			AttrEventType: stringAttr(string(m.Event.Type)),
		},
	}
	if m.Host != "" {
		in.MessageAttributes[AttrHost] = stringAttr(m.Host)
	}
	if m.InstanceID != "" {
		in.MessageAttributes[AttrInstanceID] = stringAttr(m.InstanceID)
	}
	if s.fifo {
		group := m.Host
		if group == "" {
			group = m.InstanceID
		}
		if group == "" {
			group = "connwatch"
		}
		in.MessageGroupId = aws.String(asciiLine(group, 128))
		in.MessageDeduplicationId = aws.String(m.Key)
	}
	return in, nil
}

func stringAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

var _ outbox.Deliver = (*SNS)(nil).Deliver

// Deliver publishes recs one by one; it is an outbox.Deliver.
func (s *SNS) Deliver(ctx context.Context, recs []outbox.Record) (int, error) {
	return deliverEach(ctx, recs, s.publish)
}

func (s *SNS) publish(ctx context.Context, m Message) error {
	in, err := s.Format(m)
	if err != nil {
		return fmt.Errorf("%w (%w)", err, outbox.ErrPermanent)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.snsPublish(ctx, in); err != nil {
		err = fmt.Errorf("publish to %s: %w", s.topic, err)
		var api smithy.APIError
		if errors.As(err, &api) {
			switch api.ErrorCode() {
			case "InvalidParameter", "ParameterValueInvalid", "ValidationException":
				return fmt.Errorf("%w (%w)", err, outbox.ErrPermanent)
			}
		}
		return err
	}
	return nil
}
