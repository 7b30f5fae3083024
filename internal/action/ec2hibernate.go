package action

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
)

// EC2Hibernate hibernates this EC2 instance: StopInstances with
// Hibernate=true. When EC2 answers that the instance cannot hibernate
// (UnsupportedHibernationConfiguration, UnsupportedOperation, or another
// refusal naming hibernation) it stops the instance plainly instead and says
// so in the result. Everything else is as for EC2Stop.
type EC2Hibernate struct {
	// AWSConfig are extra options for config.LoadDefaultConfig.
	AWSConfig []func(*config.LoadOptions) error
	// Timeout bounds IMDS and both API calls together; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

var _ Action = (*EC2Hibernate)(nil)

// Name implements Action.
func (*EC2Hibernate) Name() string { return NameEC2Hibernate }

// Do implements Action.
func (e *EC2Hibernate) Do(ctx context.Context, r Request) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(e.Timeout))
	defer cancel()
	in, err := thisInstance(ctx, e.AWSConfig)
	if err != nil {
		return Result{}, fmt.Errorf("hibernate instance: %w", err)
	}
	change, err := in.stop(ctx, true)
	if err == nil {
		return Result{Action: NameEC2Hibernate, Summary: fmt.Sprintf("stopped %s with hibernation (%s)%s", in, change, describe(r))}, nil
	}
	why, ok := hibernationRefused(err)
	if !ok {
		return Result{}, fmt.Errorf("hibernate %s: %w", in, err)
	}
	change, err = in.stop(ctx, false)
	if err != nil {
		return Result{}, fmt.Errorf("stop %s after hibernation was refused (%s): %w", in, why, err)
	}
	return Result{Action: NameEC2Hibernate, Summary: fmt.Sprintf("hibernation not possible (%s): stopped %s (%s)%s", why, in, change, describe(r))}, nil
}
