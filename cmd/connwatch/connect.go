package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/connect"
)

const connectLong = `connect is an OpenSSH ProxyCommand for EC2 instances that may be stopped.
It finds the instance, starts it if it is stopped or hibernated, waits
until it runs and its SSH port accepts connections, then passes the SSH
connection through its standard input and output. ssh, scp, sftp, rsync,
port forwards and VS Code Remote-SSH read ssh_config, so they all work
unchanged with a stanza like this one:

  Host devbox
      HostName i-0123456789abcdef0
      HostKeyAlias devbox
      ProxyCommand connwatch connect --region eu-west-1 %h %p

'connwatch connect --print-ssh-config devbox i-0123456789abcdef0' prints
it, with the path of this connwatch and the flags given.

INSTANCE is an instance id (i- and 8 or 17 hex digits) or name:TAG, the
instance whose Name tag is TAG: exactly one instance that is not
terminated must have it, else connect lists the matches and fails. PORT
is the SSH port (22 unless given; ssh passes it as %p).

By the instance's state:
  running        connect at once, after one DescribeInstances call
  stopped        StartInstances, wait for running, then for the port
                 (a hibernated instance resumes the same way)
  stopping       wait for stopped, then start
  pending        wait
  shutting-down, terminated, not found: fail, saying so
It polls DescribeInstances every 2 s and, once the instance runs, tries
the port every 250 ms (each attempt given 1 s), so ssh's first byte goes
out within a quarter of a second of sshd accepting. --timeout bounds all
of it. Progress goes to standard error, which ssh and VS Code show:

  connwatch: starting i-0123456789abcdef0 (stopped, t3.large)
  connwatch: i-0123456789abcdef0 running after 31 s
  connwatch: connecting to 203.0.113.7:22 (public address)
  connwatch: sshd answering after 9 s

ssh's ConnectTimeout bounds the wait for the server's banner through a
ProxyCommand, so it must be unset or longer than a boot; VS Code passes
its remote.SSH.connectTimeout (15 s by default) as ConnectTimeout: raise
it (e.g. to 180) for hosts that start on demand.

Standard output carries the SSH stream and nothing else. When ssh closes
its side, the TCP connection is half-closed (the server still sends what
it has left); when the server closes, connect exits.

Many at once: ten 'ssh devbox' started together make one StartInstances
call. Each takes a lock file per instance, in $XDG_RUNTIME_DIR/connwatch
(else connwatch-UID in the temporary directory; a directory someone else
owns or can write is refused), while it starts the instance and waits for
it to run; the others wait for the lock, find the instance running and
connect.

--address: public (the default when the instance has one), private (the
default otherwise: from inside the VPC or over a VPN) or ipv6.

Host keys stay OpenSSH's business. A public address changes at every
start, but with a ProxyCommand ssh files the host key under HostKeyAlias
(else under HostName, the instance id), never under the address, so
known_hosts keeps matching after a restart; HostKeyAlias also keeps the
entry when HostName switches between the id and name:TAG.

--hold DURATION (e.g. 10m): when this connect started the instance, it
tags it ` + connect.HoldTag + ` = now + DURATION (RFC 3339, UTC). The agent on
the instance reads the tag from the instance metadata (allow instance
tags in metadata on the instance) and does not stop the instance before
then, capped by its idle.start_hold_max (1h by default). The agent's
--boot-grace (5m by default) stays the main guard: no stop within that
long of boot, whoever started the instance. --hold covers a first
session that comes later than that: a slow boot, a long wait at a
passphrase or MFA prompt, VS Code installing its server. Nothing is sent
when the instance was already running; a refused CreateTags is a
warning, not a failure.

Credentials, region and endpoints come from the AWS SDK's standard
settings: the environment, the shared config and credentials files
(--profile), SSO, an instance profile; the region from --region,
AWS_REGION or the profile; AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_EC2. The
IAM policy needs:
  ec2:DescribeInstances   always (it takes Resource "*")
  ec2:StartInstances      to start a stopped instance (limit it to your
                          instances' ARNs or tags)
  ec2:CreateTags          only with --hold (limit it with the condition
                          aws:TagKeys = ` + connect.HoldTag + `)
An instance whose EBS volumes use a customer managed KMS key also needs
kms:CreateGrant on that key for the start, else it goes back to stopped
(connect says so, with EC2's reason).

Exit status: 0 when the server closed the connection; 1 when the
instance cannot be found, started or reached within --timeout, or AWS
refuses (the API error code and message are shown, with the IAM action
to allow); 2 on usage errors.`

type connectFlags struct {
	region, profile, address string
	timeout, hold            time.Duration
	printConfig              bool
}

// regionRE is what a region looks like (eu-west-1, us-gov-west-1).
var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+$`)

func newConnectCmd() *cobra.Command {
	var f connectFlags
	cmd := &cobra.Command{
		Use:   "connect [flags] INSTANCE [PORT]",
		Short: "Start a stopped EC2 instance and connect ssh to it (an ssh ProxyCommand)",
		Long:  connectLong,
		Example: `  # ~/.ssh/config
  Host devbox
      HostName i-0123456789abcdef0
      HostKeyAlias devbox
      ProxyCommand connwatch connect --region eu-west-1 --hold 10m %h %p

  connwatch connect --region eu-west-1 --print-ssh-config devbox i-0123456789abcdef0 >> ~/.ssh/config
  ssh -o ProxyCommand='connwatch connect --address private %h %p' name:build-box`,
		Args: func(cmd *cobra.Command, args []string) error {
			return checkConnectArgs(cmd, f, args)
		},
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.printConfig {
				return printSSHConfig(cmd, f, args[0], args[1])
			}
			return runConnect(cmd, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.region, "region", "", "region of the instance (default: the SDK's, e.g. AWS_REGION or the profile's)")
	fl.StringVar(&f.profile, "profile", "", "shared config profile (default: AWS_PROFILE or default)")
	fl.StringVar(&f.address, "address", "", "address to connect to: public, private or ipv6 (default: public, else private)")
	fl.DurationVar(&f.timeout, "timeout", connect.DefaultTimeout, "give up waiting for the instance and sshd after this long")
	fl.DurationVar(&f.hold, "hold", 0, "after starting the instance, tag it so the agent keeps it up this long (0: off)")
	fl.BoolVar(&f.printConfig, "print-ssh-config", false, "print the ssh_config stanza for HOST and INSTANCE (args: HOST INSTANCE) and exit")
	if err := cmd.RegisterFlagCompletionFunc("address", fixedValues(connect.Addresses...)); err != nil {
		panic(err) // a flag name typo: caught by every test run
	}
	return cmd
}

// checkConnectArgs validates everything that needs no AWS.
func checkConnectArgs(cmd *cobra.Command, f connectFlags, args []string) error {
	if _, err := connect.ParseAddress(f.address); err != nil || (f.address == "" && cmd.Flags().Changed("address")) {
		return usagef("--address %q: want public, private or ipv6", f.address)
	}
	if f.timeout <= 0 {
		return usagef("--timeout %v: must be positive", f.timeout)
	}
	if f.hold < 0 {
		return usagef("--hold %v: must not be negative", f.hold)
	}
	if f.region != "" && !regionRE.MatchString(f.region) {
		return usagef("--region %q: not a region name (like eu-west-1)", f.region)
	}
	if f.printConfig {
		if len(args) != 2 {
			return usagef("connect --print-ssh-config takes HOST and INSTANCE, got %d arguments", len(args))
		}
		if _, err := connect.ParseTarget(args[1]); err != nil {
			return usagef("%w", err)
		}
		return nil
	}
	if len(args) < 1 || len(args) > 2 {
		return usagef("connect takes INSTANCE and an optional PORT, got %d arguments", len(args))
	}
	if _, err := connect.ParseTarget(args[0]); err != nil {
		return usagef("%w", err)
	}
	if len(args) == 2 {
		if _, err := connect.ParsePort(args[1]); err != nil {
			return usagef("%w", err)
		}
	}
	return nil
}

// printSSHConfig prints the stanza for host, with the flags given other
// than --print-ssh-config itself.
func printSSHConfig(cmd *cobra.Command, f connectFlags, host, instance string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this executable: %w", err)
	}
	var flags []string
	for _, name := range []string{"region", "profile", "address", "timeout", "hold"} {
		if fl := cmd.Flags().Lookup(name); fl.Changed {
			flags = append(flags, "--"+name, fl.Value.String())
		}
	}
	text, err := connect.Stanza{Host: host, Instance: instance, Executable: exe, Flags: flags}.SSHConfig()
	if err != nil {
		return usagef("%w", err)
	}
	_, err = fmt.Fprint(cmd.OutOrStdout(), text)
	return err
}

func runConnect(cmd *cobra.Command, f connectFlags, args []string) error {
	target, err := connect.ParseTarget(args[0])
	if err != nil {
		return usagef("%w", err)
	}
	port := connect.DefaultPort
	if len(args) == 2 {
		if port, err = connect.ParsePort(args[1]); err != nil {
			return usagef("%w", err)
		}
	}
	ctx := cmd.Context()
	var opts []func(*config.LoadOptions) error
	if f.region != "" {
		opts = append(opts, config.WithRegion(f.region))
	}
	if f.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(f.profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return errors.New("no AWS region: give --region, set AWS_REGION, or set one in the profile")
	}
	in := cmd.InOrStdin()
	if in == os.Stdin {
		in = connect.PollableStdin() // ssh's pipe, for splice(2)
	}
	err = connect.Run(ctx, connect.Options{
		Client:   connect.SDK(ec2.NewFromConfig(cfg)),
		Region:   cfg.Region,
		Target:   target,
		Port:     port,
		Address:  connect.Address(f.address),
		Timeout:  f.timeout,
		Hold:     f.hold,
		Progress: cmd.ErrOrStderr(),
	}, in, cmd.OutOrStdout())
	if errors.Is(err, connect.ErrBadTarget) {
		return usagef("%w", err)
	}
	return err
}
