package main

import (
	"context"
	"fmt"

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
		src, err := clientvpn.New(clientvpn.NewEC2(c.Region), clientvpn.Config{Endpoints: c.Endpoints, Clock: clk})
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
