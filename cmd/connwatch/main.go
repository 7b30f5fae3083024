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

	"github.com/connwatch/connwatch/internal/version"
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
	cmd, err := root.ExecuteContextC(ctx)
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
		fmt.Fprintf(root.ErrOrStderr(), "Run '%s --help' for usage.\n", cmd.CommandPath())
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
authenticated connections, never password-guessing bots. The agent
publishes sessions and events (Prometheus, CloudWatch, webhooks, SNS) and
stops the machine when nobody has used it for a while; tunnel keeps your
own SSH port forwards up.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.Get().String(),
		Args:          subcommandArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	// --version prints what "connwatch version" prints.
	root.SetVersionTemplate(versionText())
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{err}
	})
	root.AddCommand(newStatusCmd(), newAgentCmd(), newInhibitCmd(), newTunnelCmd(), newDoctorCmd(), newAlarmCmd(), newAWSCmd(), newConnectCmd(), newConfigCmd(), newVersionCmd(), newManCmd())
	return root
}

// suggest returns the subcommands of cmd whose names are near name.
func suggest(cmd *cobra.Command, name string) []string {
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra sets it only on its own path
	}
	return cmd.SuggestionsFor(name)
}

// subcommandArgs is the Args of a command that only groups others: any
// argument is a subcommand that does not exist, a usage error that
// suggests the nearest names (cobra's suggestions apply to the root only,
// and only without an Args function of its own).
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := suggest(cmd, args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
		for _, o := range s[1:] {
			msg += fmt.Sprintf(" or %q?", o)
		}
	}
	return usageError{errors.New(msg)}
}
