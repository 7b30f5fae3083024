package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/report"
)

func newInhibitCmd() *cobra.Command {
	var (
		reason   string
		ttl      time.Duration
		list     bool
		release  string
		stateDir string
	)
	cmd := &cobra.Command{
		Use:   "inhibit [--reason R] [--ttl D] -- CMD [ARGS...]",
		Short: "Keep the machine awake while a command runs (or for --ttl)",
		Long: `inhibit holds the machine up: the agent will not stop it while the lock
is held. With a command, the lock lasts while the command runs (and at
most --ttl, if given); inhibit runs it in the foreground, passes signals
on, and exits with its exit status. Without a command, --ttl is required
and the lock lasts that long (release it early with --release ID).

The lock is a file under STATE_DIR/holds; the agent checks that its
process still runs, so a killed inhibit never holds the machine forever.`,
		Example: `  connwatch inhibit --reason "nightly backup" -- /usr/local/bin/backup.sh
  connwatch inhibit --ttl 2h --reason "deploy window"
  connwatch inhibit --list`,
		RunE: func(cmd *cobra.Command, args []string) error {
			store := hold.Store{Dir: filepath.Join(stateDir, "holds")}
			now := time.Now()
			switch {
			case list:
				if len(args) > 0 {
					return usagef("--list takes no command")
				}
				return listHolds(cmd, store, now)
			case release != "":
				return store.Release(release)
			}
			if len(args) == 0 && ttl <= 0 {
				return usagef("give a command to run (after --) or a --ttl")
			}
			if len(args) == 0 {
				l, err := store.Acquire(reason, "", 0, now, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "holding until %s (id %s; release with: connwatch inhibit --release %s)\n", l.Expires.Local().Format(time.RFC3339), l.ID, l.ID)
				return nil
			}
			return runInhibited(cmd, store, reason, ttl, args)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the machine must stay up (shown by --list and status)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "the lock ends after this long even if the command still runs")
	cmd.Flags().BoolVar(&list, "list", false, "list the locks held now")
	cmd.Flags().StringVar(&release, "release", "", "release the lock with this id")
	cmd.Flags().StringVar(&stateDir, "state-dir", config.DefaultStateDir(), "the agent's state directory")
	return cmd
}

func runInhibited(cmd *cobra.Command, store hold.Store, reason string, ttl time.Duration, args []string) error {
	c := exec.Command(args[0], args[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
	// Hold the lock for our own PID: it is alive exactly as long as we wait.
	l, err := store.Acquire(reason, strings.Join(args, " "), os.Getpid(), time.Now(), ttl)
	if err != nil {
		return err
	}
	defer store.Release(l.ID)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		return fmt.Errorf("run %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		select {
		case s := <-sigs:
			c.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitCodeError{code: ee.ExitCode(), err: err}
			}
			return err
		}
	}
}

// exitCodeError makes connwatch exit with a child's exit status.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func listHolds(cmd *cobra.Command, store hold.Store, now time.Time) error {
	live, stale, err := store.List(now)
	if err != nil {
		return err
	}
	return report.Locks(cmd.OutOrStdout(), live, len(stale), time.Local)
}
