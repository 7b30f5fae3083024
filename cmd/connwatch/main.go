// Command connwatch knows who is connected to a machine, keeps your own
// connections alive, and stops machines nobody is using.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors in how connwatch was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	// The first SIGINT or SIGTERM cancels (a clean exit); a second aborts.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "connwatch: second signal, aborting")
		os.Exit(exitFailure)
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// run executes connwatch with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ce exitCodeError
	if errors.As(err, &ce) {
		// inhibit: the command's own status, nothing to add.
		return ce.code
	}
	fmt.Fprintf(root.ErrOrStderr(), "connwatch: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(root.ErrOrStderr(), "Run 'connwatch --help' for usage.\n")
		return exitUsage
	}
	return exitFailure
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "connwatch",
		Short: "See who is connected, keep your connections alive, stop machines nobody uses",
		Long: `connwatch knows who is connected to this machine over SSH (terminals,
VS Code Remote, Cloud9, scp, sftp, port forwards), counting only
authenticated connections, never password-guessing bots.

Commands:
  status   list the authenticated sessions and pending connections now
  agent    watch sessions, emit events, stop the machine when nobody uses it
  inhibit  keep the machine awake while a command runs
  tunnel   keep the forwards of ssh_config hosts up (autossh replacement)
  doctor   audit sshd/ssh keepalive and idle settings, and fix them
  alarm    evaluate CloudWatch alarm semantics locally ("what would my alarm do?")
  aws      set up the CloudWatch alarm that stops an idle instance
  config   check a configuration file
`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{err}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newStatusCmd(), newAgentCmd(), newInhibitCmd(), newTunnelCmd(), newDoctorCmd(), newAlarmCmd(), newAWSCmd(), newConfigCmd())
	return root
}
