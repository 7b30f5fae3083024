package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/tunnel"
)

const tunnelLong = `Keep the port forwards of one or more ssh_config Hosts alive, in the
foreground, like autossh but without an ssh process: connwatch speaks SSH
itself (golang.org/x/crypto/ssh).

Each HOST is resolved with 'ssh -G [-F FILE] [-o Key=Value]... HOST', so
everything ssh_config can say about it (Match, Include, %-tokens, Host
patterns) applies. From the result connwatch uses:

  HostName, Port, User          where to connect
  IdentityFile, IdentitiesOnly  keys: unencrypted files directly; keys with a
                                passphrase only through the ssh-agent at
                                SSH_AUTH_SOCK; without IdentitiesOnly also
                                the agent's other keys
  UserKnownHostsFile,           host key checking (hashed names,
  GlobalKnownHostsFile          @cert-authority and @revoked understood)
  StrictHostKeyChecking         yes (and ask, as nobody is there to answer),
                                accept-new (unknown hosts are appended to the
                                first UserKnownHostsFile), no
  ConnectTimeout                bounds TCP connect and the SSH handshake
  ServerAliveInterval,          a keepalive@openssh.com request every
  ServerAliveCountMax           interval, each reply awaited for one
                                interval; after CountMax misses in a row the
                                connection is dropped and made again. 0 (off)
                                means 15 s x 3 here: a tunnel needs them
  LocalForward, RemoteForward,  the forwards kept alive (TCP only; unix
  DynamicForward                sockets and remote SOCKS are not supported;
                                DynamicForward is SOCKS5 CONNECT, no auth)
  ExitOnForwardFailure          a local port that cannot be bound ends
                                connwatch, a refused RemoteForward drops the
                                connection; otherwise a failing forward only
                                logs and is retried, and the others go on

Reconnects never give up: jittered exponential backoff from 250 ms to 10 s,
starting over after a connection stayed up for 30 s. Local listeners stay
open while the link is down; a connection arriving then waits up to 15 s
for the link and is closed if it does not come back. SIGUSR1 makes every
tunnel retry now (e.g. from a network-up hook). SIGINT/SIGTERM stop.

Every state change is logged to standard error: the tunnel's (connecting,
up, backoff) and each forward's (listening, bind-failed, up,
remote-bind-failed, down).

Examples:
  connwatch tunnel db-bastion
  connwatch tunnel -F ~/.ssh/tunnels.conf -o ServerAliveInterval=5 a b
`

type tunnelFlags struct {
	configFile string
	options    []string
	logFormat  string
	logLevel   string
}

func newTunnelCmd() *cobra.Command {
	var f tunnelFlags
	cmd := &cobra.Command{
		Use:   "tunnel [-F FILE] [-o Key=Value]... HOST...",
		Short: "keep the port forwards of ssh_config Hosts alive (autossh in Go)",
		Long:  tunnelLong,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("tunnel: name at least one HOST")
			}
			for _, o := range f.options {
				if k, _, ok := strings.Cut(o, "="); !ok || k == "" {
					return usagef("tunnel: -o %q: want Key=Value", o)
				}
			}
			switch f.logFormat {
			case "text", "json":
			default:
				return usagef("tunnel: --log-format %q: want text or json", f.logFormat)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTunnels(cmd.Context(), f, args, cmd)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.configFile, "config", "F", "", "ssh_config FILE for ssh -G (default ~/.ssh/config and /etc/ssh/ssh_config)")
	fl.StringArrayVarP(&f.options, "option", "o", nil, "ssh_config option Key=Value passed to ssh -G (repeatable)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// sshOptions is a Runner adding -o options to ssh -G.
type sshOptions struct {
	r       sshconfig.Runner
	options []string
}

func (s sshOptions) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out []string
	for _, a := range args {
		if a == "--" {
			for _, o := range s.options {
				out = append(out, "-o", o)
			}
		}
		out = append(out, a)
	}
	return s.r.Output(ctx, name, out...)
}

func runTunnels(ctx context.Context, f tunnelFlags, hosts []string, cmd *cobra.Command) error {
	log := newLogger(config.Agent{LogLevel: f.logLevel, LogFormat: f.logFormat}, cmd.ErrOrStderr())
	runner := sshOptions{r: sshconfig.Exec{}, options: f.options}
	var tunnels []*tunnel.Tunnel
	for _, h := range hosts {
		s, err := sshconfig.ClientSettings(ctx, runner, sshconfig.ClientOptions{Host: h, ConfigFile: f.configFile})
		if err != nil {
			return fmt.Errorf("resolve %s: %w", h, err)
		}
		spec, err := tunnel.SpecFromSettings(h, s)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", h, err)
		}
		if len(spec.Forwards) == 0 {
			log.Warn("host has no forwards; keeping the connection up anyway", "host", h)
		}
		tunnels = append(tunnels, tunnel.New(spec, tunnel.Options{Logger: log.With("source", "tunnel")}))
	}

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-usr1:
				log.Info("SIGUSR1: retrying every tunnel now")
				for _, t := range tunnels {
					t.Retry()
				}
			}
		}
	})
	for _, t := range tunnels {
		g.Go(func() error { return t.Run(ctx) })
	}
	return g.Wait()
}
