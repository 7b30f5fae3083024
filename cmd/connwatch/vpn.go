package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/clientvpn"
	"github.com/connwatch/connwatch/internal/source/openvpn"
	"github.com/connwatch/connwatch/internal/source/wireguard"
)

// vpnPollers builds the polled sources the configuration enables. The
// returned close releases them (the WireGuard client's sockets).
func vpnPollers(cfg config.Agent, clk clock.Clock) ([]agent.Polled, func(), error) {
	var out []agent.Polled
	var closers []func() error
	closeAll := func() {
		for _, c := range closers {
			_ = c()
		}
	}
	if w := cfg.WireGuard; w.Enabled {
		src, err := wireguard.Open(wireguard.Config{Interfaces: w.Interfaces, Names: w.Peers, HandshakeTimeout: w.HandshakeTimeout.Duration, Clock: clk})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("watch WireGuard: %w", err)
		}
		closers = append(closers, src.Close)
		out = append(out, agent.Polled{Poller: src, Interval: w.PollInterval.Duration})
	}
	if o := cfg.OpenVPN; o.Enabled {
		for _, srv := range o.Servers {
			src, err := openvpn.New(openvpn.Config{Name: srv.Name, Management: srv.Management, PasswordFile: srv.PasswordFile, StatusFile: srv.StatusFile, Clock: clk})
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("watch OpenVPN server %q: %w", srv.Name, err)
			}
			out = append(out, agent.Polled{Poller: src, Interval: o.PollInterval.Duration})
		}
	}
	if c := cfg.AWSClientVPN; c.Enabled {
		src, err := clientvpn.New(&lazyEC2{region: c.Region}, clientvpn.Config{Endpoints: c.Endpoints, Clock: clk})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("watch AWS Client VPN: %w", err)
		}
		out = append(out, agent.Polled{Poller: src, Interval: c.PollInterval.Duration})
	}
	return out, closeAll, nil
}

// pollOnce polls every source once, each bounded as the agent bounds
// it (for `connwatch status` without a running agent), and adds what they
// see to snap.
func pollOnce(ctx context.Context, pollers []agent.Polled, snap *session.Snapshot) {
	for _, p := range pollers {
		pctx, cancel := context.WithTimeout(ctx, agent.PollTimeout(p.Interval))
		got, err := p.Poller.Poll(pctx)
		cancel()
		agent.AddPoll(snap, p.Poller, got, err)
	}
}

// lazyEC2 is an EC2 client made at the first call, so that an agent
// started before the network or IMDS is up still starts: until the
// client can be made, polls fail (the kind is blind) and are retried.
// The region is the configured one, else the SDK's (AWS_REGION, the
// profile), else the instance's from IMDS.
type lazyEC2 struct {
	region string

	mu     sync.Mutex
	client *ec2.Client
}

var _ clientvpn.API = (*lazyEC2)(nil)

// regionTimeout bounds the IMDS region lookup.
const regionTimeout = 5 * time.Second

func (l *lazyEC2) get(ctx context.Context) (*ec2.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil {
		return l.client, nil
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
			return nil, fmt.Errorf("no region: set aws_client_vpn.region or AWS_REGION (asking IMDS failed: %w)", err)
		}
		cfg.Region = out.Region
	}
	if cfg.Region == "" {
		return nil, errors.New("no region: set aws_client_vpn.region or AWS_REGION")
	}
	l.client = ec2.NewFromConfig(cfg)
	return l.client, nil
}

// DescribeClientVpnConnections implements clientvpn.API.
func (l *lazyEC2) DescribeClientVpnConnections(ctx context.Context, in *ec2.DescribeClientVpnConnectionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeClientVpnConnectionsOutput, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.DescribeClientVpnConnections(ctx, in, optFns...)
}
