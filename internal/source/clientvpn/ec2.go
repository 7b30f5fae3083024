package clientvpn

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2 is the API through an EC2 client made at the first call, so that
// an agent started before the network or IMDS is up still starts: until
// the client can be made, polls fail (the kind is blind) and are retried.
// The region is the one given, else the SDK's (AWS_REGION, the profile),
// else the instance's from IMDS.
type EC2 struct {
	region string

	mu sync.Mutex
	// describe is the client's method value, not the *ec2.Client: see
	// connect.SDK for the 19 MB a reachable *ec2.Client costs.
	describe describeFunc
}

// describeFunc is (*ec2.Client).DescribeClientVpnConnections.
type describeFunc = func(context.Context, *ec2.DescribeClientVpnConnectionsInput, ...func(*ec2.Options)) (*ec2.DescribeClientVpnConnectionsOutput, error)

var _ API = (*EC2)(nil)

// NewEC2 returns an EC2 for region ("": the SDK's, else IMDS's).
func NewEC2(region string) *EC2 { return &EC2{region: region} }

// regionTimeout bounds the IMDS region lookup.
const regionTimeout = 5 * time.Second

func (l *EC2) get(ctx context.Context) (describeFunc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.describe != nil {
		return l.describe, nil
	}
	var opts []func(*awsconfig.LoadOptions) error
	if l.region != "" {
		opts = append(opts, awsconfig.WithRegion(l.region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		rctx, cancel := context.WithTimeout(ctx, regionTimeout)
		defer cancel()
		out, err := imds.NewFromConfig(cfg).GetRegion(rctx, nil)
		if err != nil {
			return nil, fmt.Errorf("no region: set the Client VPN region or AWS_REGION (asking IMDS failed: %w)", err)
		}
		cfg.Region = out.Region
	}
	if cfg.Region == "" {
		return nil, errors.New("no region: set the Client VPN region or AWS_REGION")
	}
	l.describe = ec2.NewFromConfig(cfg).DescribeClientVpnConnections
	return l.describe, nil
}

// DescribeClientVpnConnections implements API.
func (l *EC2) DescribeClientVpnConnections(ctx context.Context, in *ec2.DescribeClientVpnConnectionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeClientVpnConnectionsOutput, error) {
	describe, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return describe(ctx, in, optFns...)
}
