package action

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

// instance is this EC2 instance, as its metadata service reports it, with
// StopInstances of an EC2 client for its region. It holds the method
// value, not the *ec2.Client (see connect.SDK for why).
type instance struct {
	id, region    string
	stopInstances func(context.Context, *ec2.StopInstancesInput, ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
}

// thisInstance loads the AWS configuration the standard way and asks IMDS
// (IMDSv2, through the SDK's client) who and where this instance is. The
// EC2 client is pinned to the instance's region whatever AWS_REGION says.
func thisInstance(ctx context.Context, opts []func(*config.LoadOptions) error) (instance, error) {
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return instance{}, fmt.Errorf("load AWS config: %w", err)
	}
	doc, err := imds.NewFromConfig(cfg).GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		return instance{}, fmt.Errorf("read instance identity from IMDS: %w", err)
	}
	if doc.InstanceID == "" || doc.Region == "" {
		return instance{}, fmt.Errorf("read instance identity from IMDS: document without instance id or region (%q, %q)", doc.InstanceID, doc.Region)
	}
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.Region = doc.Region })
	return instance{id: doc.InstanceID, region: doc.Region, stopInstances: client.StopInstances}, nil
}

// stop sends StopInstances for the instance and describes the state change
// EC2 reported, e.g. "running -> stopping".
func (in instance) stop(ctx context.Context, hibernate bool) (string, error) {
	input := &ec2.StopInstancesInput{InstanceIds: []string{in.id}}
	if hibernate {
		input.Hibernate = aws.Bool(true)
	}
	out, err := in.stopInstances(ctx, input)
	if err != nil {
		return "", err
	}
	for _, c := range out.StoppingInstances {
		if aws.ToString(c.InstanceId) == in.id && c.PreviousState != nil && c.CurrentState != nil {
			return fmt.Sprintf("%s -> %s", c.PreviousState.Name, c.CurrentState.Name), nil
		}
	}
	return "no state change reported", nil
}

func (in instance) String() string { return in.id + " in " + in.region }

// hibernationRefused tells whether EC2 refused a hibernating stop because
// this instance cannot hibernate, in which case a plain stop is the
// fallback, and returns the error code and message for the result.
func hibernationRefused(err error) (string, bool) {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return "", false
	}
	code, msg := api.ErrorCode(), api.ErrorMessage()
	why := code
	if msg != "" {
		why += ": " + msg
	}
	switch code {
	case "UnsupportedHibernationConfiguration", "UnsupportedOperation":
		return why, true
	case "AuthFailure", "UnauthorizedOperation", "RequestLimitExceeded", "InternalError", "Unavailable":
		return "", false
	}
	// Other refusals that name hibernation, e.g. an instance not
	// configured or not yet ready for it.
	if strings.Contains(strings.ToLower(msg), "hibernat") {
		return why, true
	}
	return "", false
}
