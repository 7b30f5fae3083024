package action

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
)

// EC2Stop stops this EC2 instance with StopInstances. The instance id and
// region come from the instance metadata service (IMDSv2); credentials and
// endpoints from the SDK's standard settings, typically the instance
// profile. The IAM policy needs ec2:StopInstances on this instance.
type EC2Stop struct {
	// AWSConfig are extra options for config.LoadDefaultConfig.
	AWSConfig []func(*config.LoadOptions) error
	// Timeout bounds IMDS and the API call together; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

var _ Action = (*EC2Stop)(nil)

// Name implements Action.
func (*EC2Stop) Name() string { return NameEC2Stop }

// Do implements Action.
func (e *EC2Stop) Do(ctx context.Context, r Request) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(e.Timeout))
	defer cancel()
	in, err := thisInstance(ctx, e.AWSConfig)
	if err != nil {
		return Result{}, fmt.Errorf("stop instance: %w", err)
	}
	change, err := in.stop(ctx, false)
	if err != nil {
		return Result{}, fmt.Errorf("stop %s: %w", in, err)
	}
	return Result{Action: NameEC2Stop, Summary: fmt.Sprintf("stopped %s (%s)%s", in, change, describe(r))}, nil
}
