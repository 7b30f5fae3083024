package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/session"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check configuration files",
		Args:  subcommandArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file",
		Long: `check reads FILE strictly, as 'connwatch agent --config FILE' would: unknown
keys, syntax errors (with their line) and invalid values (with their key)
are reported and the exit status is 1. The files it names that the agent
reads at start are checked too (notify.webhook_url_file must hold a URL
and be writable by its owner only). A valid file prints a summary.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("config check takes one FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			warnings, err := cfg.CheckFiles()
			for _, w := range warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			n, m := cfg.EvaluationPeriods(), cfg.Idle.DatapointsToAlarm
			if m == 0 {
				m = n
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (action %s when %d of %d periods of %v are idle; watching %s; kept up by %s)\n",
				args[0], cfg.Action.Type, m, n, cfg.Idle.Period, kindList(cfg.Kinds()), kindList(cfg.KeepAwakeKinds()))
			return nil
		},
	})
	return cmd
}

func kindList(kinds []session.Kind) string {
	if len(kinds) == 0 {
		return "none"
	}
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return strings.Join(out, ", ")
}
