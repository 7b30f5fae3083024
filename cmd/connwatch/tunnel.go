package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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
  ConnectTimeout                bounds each TCP attempt, a round of them
                                and the SSH handshake (20 s when unset)
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
                                connection (on a reconnection only after a
                                minute of retries: the server may still hold
                                the port for the dead session); otherwise a
                                failing forward only logs and is retried,
                                and the others go on
  ProxyJump                     connect through these jump hosts, each
                                resolved with ssh -G too (the first one's
                                own ProxyJump is followed), host keys checked
                                per hop; keepalives run on the last hop.
                                ProxyCommand is not supported

Make before break: once a keepalive reply is --standby-after late (2 s;
never later than ServerAliveInterval; 0 turns it off), a standby
connection is dialled beside the silent one and must answer a keepalive
of its own (a failed standby is dialled again as reconnects are: at once
after a network failure, after the backoff when the SSH handshake
failed). If the old one answers first the standby is dropped; if the
standby does, it takes over at once: new forwarded connections, and
those opened while the old one was silent, go through it, remote
forwards are bound on it, and the old connection drains (it keeps what
it carries until its keepalives run out or, if it answers again, until
it carries nothing). The tunnel stays up throughout. This rescues a
tunnel whose TCP flow a NAT or firewall forgot while the network works.

Reconnects never give up. While the server cannot be reached (a dead
link, a refused or unreachable port, DNS) there is no growing backoff: a
new TCP attempt starts every 250-500 ms while earlier ones still wait for
an answer (each given 3 s, or ConnectTimeout if shorter), and the first
to connect wins, so data flows again within about half a second of the
link's return however long it was gone. The last DNS answer is dialled
while a fresh lookup runs. Failures that retrying soon will not fix (the
SSH handshake: authentication, host key; unusable keys or settings) back
off instead, jittered from 250 ms to 10 s, starting over after a
connection stayed up for 30 s. Local listeners stay
open while the link is down; a connection arriving then waits up to 15 s
for the link and is closed if it does not come back. SIGUSR1 (or
'connwatch tunnel retry') makes every tunnel retry now, and so does a
network change seen through netlink: a default route or an address added
or changed (after 200 ms without further changes). Retrying cuts a
backoff wait short, abandons a connection attempt in progress for a fresh
one, and checks a connection that is up with a keepalive answered within
a second (or ServerAliveInterval if shorter): if none comes, a standby
connection is dialled at once and takes over if it answers first (with
--standby-after 0, the connection is made again at once); a healthy one
is left alone. Where netlink cannot be
used this is logged once and only SIGUSR1 is left. SIGINT/SIGTERM stop.

Every state change is logged to standard error: the tunnel's (connecting,
up, backoff) and each forward's (listening, bind-failed, up,
remote-bind-failed, down). It is also written, with the process id, to
STATE_DIR/tunnels/HOST.json (at once on a state change, at most every 5 s
for keepalive round trips and connection counts; removed on exit), which
'connwatch tunnel status' reads and 'connwatch tunnel retry' uses to find
the processes to send SIGUSR1 to. STATE_DIR is --state-dir, by default the
agent's (/var/lib/connwatch for root or when it exists, else
$XDG_STATE_HOME/connwatch or ~/.local/state/connwatch).

A Host named status, retry or keygen must be given with -o or through an
alias: those words are subcommands.

Examples:
  connwatch tunnel db-bastion
  connwatch tunnel -F ~/.ssh/tunnels.conf -o ServerAliveInterval=5 a b
  connwatch tunnel status
  connwatch tunnel retry
`

type tunnelFlags struct {
	configFile string
	options    []string
	logFormat  string
	logLevel   string
	stateDir   string
	probe      time.Duration
	standby    time.Duration
}

func newTunnelCmd() *cobra.Command {
	var f tunnelFlags
	cmd := &cobra.Command{
		Use:   "tunnel [-F FILE] [-o Key=Value]... HOST...",
		Short: "Keep the port forwards of ssh_config Hosts alive (autossh in Go)",
		Long:  tunnelLong,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("tunnel: name at least one HOST")
			}
			// "tunnel statu" is a typo, not a host to connect to.
			var hosts []string
			for _, a := range args {
				sugg := suggest(cmd, a)
				if len(sugg) == 0 {
					continue
				}
				if hosts == nil {
					hosts = sshHostNames(f.configFile)
				}
				if !slices.Contains(hosts, a) {
					return usagef("tunnel: %q is neither a command nor a Host of ssh_config; did you mean %q?", a, sugg[0])
				}
			}
			if err := checkSSHOptions("tunnel", f.options); err != nil {
				return err
			}
			if f.standby < 0 {
				return usagef("tunnel: --standby-after %s: must not be negative (0 turns standby connections off)", f.standby)
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
	cmd.ValidArgsFunction = sshHosts("config")
	fl := cmd.Flags()
	fl.StringVarP(&f.configFile, "config", "F", "", "ssh_config FILE for ssh -G (default ~/.ssh/config and /etc/ssh/ssh_config)")
	fl.StringArrayVarP(&f.options, "option", "o", nil, "ssh_config option Key=Value passed to ssh -G (repeatable)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.stateDir, "state-dir", "", "write status files to DIR/tunnels (default: the agent's state directory)")
	fl.DurationVar(&f.probe, "probe-interval", 0, "check each LocalForward's destination through the server this often, marking the forward down when unreachable (0: off)")
	fl.DurationVar(&f.standby, "standby-after", tunnel.DefaultStandbyAfter, "when a keepalive reply is this late, dial a standby connection and move to it if it answers first (0: off)")
	cmd.AddCommand(newTunnelStatusCmd(), newTunnelRetryCmd(), newTunnelKeygenCmd())
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
	stateDir := f.stateDir
	if stateDir == "" {
		stateDir = config.DefaultStateDir()
	}
	set, err := newTunnelSet(ctx, hosts, f.configFile, f.options, stateDir, tunnelTuning{probe: f.probe, standby: f.standby}, log, func() { trimStartup(log) })
	if err != nil {
		return err
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				log.Info("SIGUSR1: retrying every tunnel now")
				set.retry()
			}
		}
	}()
	return set.run(ctx)
}

func newTunnelStatusCmd() *cobra.Command {
	var (
		asJSON   bool
		stateDir string
	)
	cmd := &cobra.Command{
		Use:   "status [--state-dir DIR] [--json]",
		Short: "show the tunnels that connwatch tunnel processes keep up",
		Long: `status reads the status files that running 'connwatch tunnel' processes
write to STATE_DIR/tunnels/HOST.json and prints, per Host, the tunnel's
state (connecting, up, backoff), since when, its last error, the last
keepalive round trip and how often it reconnected, and the same for each
forward (listening, bind-failed, up, remote-bind-failed, down) with the
connections carried. A file whose process is gone (killed without
cleaning up) is shown as stale.

--json prints an array of {pid, written, host, state, since, last_error,
keepalive_rtt_ns, reconnects, forwards: [{forward, state, since,
last_error, conns}], stale}.`,
		Example: `  connwatch tunnel status
  connwatch tunnel status --json | jq '.[] | select(.state != "up") | .host'`,
		Args: noArgs("tunnel status"),
		RunE: func(cmd *cobra.Command, args []string) error {
			files := readTunnelStatus(cmd, stateDir)
			if asJSON {
				if files == nil {
					files = []tunnel.StatusFile{}
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(files)
			}
			return tunnelTable(cmd.OutOrStdout(), files, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (an array, one object per Host)")
	cmd.Flags().StringVar(&stateDir, "state-dir", config.DefaultStateDir(), "state directory the tunnels write to")
	return cmd
}

// tunnelTable prints one line per tunnel and an indented one per forward.
func tunnelTable(w io.Writer, files []tunnel.StatusFile, now time.Time) error {
	if len(files) == 0 {
		_, err := fmt.Fprintln(w, "no tunnels running")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tFOR\tRTT\tRECONNECTS\tHANDOVERS\tPID\tLAST ERROR")
	for _, f := range files {
		state := string(f.State)
		if f.Stale {
			state = "stale (" + state + ")"
		}
		rtt := "-"
		if f.KeepaliveRTT > 0 {
			rtt = f.KeepaliveRTT.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", f.Host, state, ago(now, f.Since), rtt, f.Reconnects, f.Handovers, f.PID, f.LastError)
		for _, fw := range f.Forwards {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d conns\t\t\t%s\n", fw.Forward, fw.State, ago(now, fw.Since), fw.Conns, fw.LastError)
		}
	}
	return tw.Flush()
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String()
}

func newTunnelRetryCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "retry [--state-dir DIR]",
		Short: "make running connwatch tunnel processes reconnect now",
		Long: `retry sends SIGUSR1 to every running 'connwatch tunnel' process found
through its status file in STATE_DIR/tunnels, which makes each tunnel
retry now: a backoff wait is cut short, an attempt in progress is started
afresh, and a connection that is up is probed; if it does not answer
within a second a standby connection is dialled at once (or, with
standbys off, the connection is made again). Use it
from a network-up hook when netlink is not available to connwatch.

Exit status: 0 when every live process was signalled (or none runs),
1 when a signal could not be sent.`,
		Args: noArgs("tunnel retry"),
		RunE: func(cmd *cobra.Command, args []string) error {
			files := readTunnelStatus(cmd, stateDir)
			done := map[int]bool{}
			var errs []error
			for _, f := range files {
				if f.Stale || done[f.PID] {
					continue
				}
				done[f.PID] = true
				if err := syscall.Kill(f.PID, syscall.SIGUSR1); err != nil {
					errs = append(errs, fmt.Errorf("signal pid %d (%s): %w", f.PID, f.Host, err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "signalled pid %d\n", f.PID)
			}
			if len(done) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no tunnels running")
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", config.DefaultStateDir(), "state directory the tunnels write to")
	return cmd
}

func newTunnelKeygenCmd() *cobra.Command {
	var (
		sshFlags   tunnelFlags
		out        string
		from       string
		permitOpen []string
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "keygen [-F FILE] [-o Key=Value]... HOST [--out FILE] [--from CIDR] [--permitopen host:port]... [--force]",
		Short: "make a dedicated tunnel key for HOST and print its restricted authorized_keys line",
		Long: `keygen creates an ed25519 key without passphrase (mode 0600, written
atomically; the public half in FILE.pub) to be used only by
'connwatch tunnel HOST', and prints on standard output the line to put in
the server's authorized_keys, which allows that key port forwarding and
nothing else:

  restrict,port-forwarding          no shell, no agent or X11 forwarding
  permitopen="host:port"            one per LocalForward destination of
                                    HOST (from ssh -G) and per --permitopen;
                                    left out when HOST has a DynamicForward
                                    and no --permitopen is given (SOCKS may
                                    open anything), and when there is nothing
                                    to list (local forwarding not limited)
  permitlisten="[host:]port"        one per RemoteForward of HOST
  from="CIDR"                       with --from: only from these addresses

followed by the public key and a comment. The key file is FILE (--out),
by default ~/.ssh/connwatch_HOST_ed25519. An existing key is never
overwritten without --force. Then set, for HOST in ssh_config:
IdentityFile FILE and IdentitiesOnly yes.`,
		Example: `  connwatch tunnel keygen db-bastion --from 203.0.113.0/24 >> authorized_keys.db-bastion
  ssh-copy-id is no help here: append the printed line on the server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("tunnel keygen: name exactly one HOST")
			}
			return checkSSHOptions("tunnel keygen", sshFlags.options)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			ctx := cmd.Context()
			runner := sshOptions{r: sshconfig.Exec{}, options: sshFlags.options}
			s, err := sshconfig.ClientSettings(ctx, runner, sshconfig.ClientOptions{Host: host, ConfigFile: sshFlags.configFile})
			if err != nil {
				return fmt.Errorf("resolve %s: %w", host, err)
			}
			spec, err := tunnel.SpecFromSettings(host, s)
			if err != nil {
				return fmt.Errorf("resolve %s: %w", host, err)
			}
			comment := "connwatch-tunnel-" + host
			if hn, err := os.Hostname(); err == nil {
				comment += "@" + hn
			}
			r := tunnel.Restriction{From: from, PermitOpen: permitOpen}
			// Check the options before making a key.
			if _, err := tunnel.AuthorizedKeyOptions(spec, r); err != nil {
				return usagef("tunnel keygen: %v", err)
			}
			if out == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return fmt.Errorf("find home for the default --out: %w", err)
				}
				name := strings.NewReplacer("/", "_", " ", "_").Replace(host)
				out = filepath.Join(home, ".ssh", "connwatch_"+name+"_ed25519")
				if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
					return fmt.Errorf("create %s: %w", filepath.Dir(out), err)
				}
			}
			pub, err := tunnel.GenerateKey(out, comment, force)
			if errors.Is(err, tunnel.ErrKeyExists) {
				return fmt.Errorf("%w (use --force to replace it)", err)
			}
			if err != nil {
				return err
			}
			line, err := tunnel.AuthorizedKeysLine(spec, pub, r, comment)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s and %s.pub\nin ssh_config, under Host %s:\n  IdentityFile %s\n  IdentitiesOnly yes\non %s, append to the user's ~/.ssh/authorized_keys:\n", out, out, host, out, spec.HostName)
			_, err = fmt.Fprintln(cmd.OutOrStdout(), line)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&sshFlags.configFile, "config", "F", "", "ssh_config FILE for ssh -G")
	fl.StringArrayVarP(&sshFlags.options, "option", "o", nil, "ssh_config option Key=Value passed to ssh -G (repeatable)")
	fl.StringVar(&out, "out", "", "key FILE (default ~/.ssh/connwatch_HOST_ed25519)")
	fl.StringVar(&from, "from", "", "allow the key only from this address or CIDR prefix")
	fl.StringArrayVar(&permitOpen, "permitopen", nil, "also allow forwarding to host:port (repeatable)")
	fl.BoolVar(&force, "force", false, "replace an existing key")
	return cmd
}

// checkSSHOptions checks -o options for ssh -G.
func checkSSHOptions(cmd string, options []string) error {
	for _, o := range options {
		if k, _, ok := strings.Cut(o, "="); !ok || k == "" {
			return usagef("%s: -o %q: want Key=Value", cmd, o)
		}
	}
	return nil
}

// noArgs is a cobra.PositionalArgs refusing arguments with a usage error.
func noArgs(cmd string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("%s takes no arguments, got %q", cmd, args[0])
		}
		return nil
	}
}

// readTunnelStatus reads the status files under stateDir, warning on
// standard error about those it cannot read.
func readTunnelStatus(cmd *cobra.Command, stateDir string) []tunnel.StatusFile {
	files, err := tunnel.ReadStatusFiles(filepath.Join(stateDir, tunnel.StatusDir))
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
	}
	return files
}
