package main

import "github.com/spf13/cobra"

// newManCmd is the hidden man command. The generator behind it
// (writeManPages) is built only with -tags manpages (see man.go); the
// shipped binary says how to get the pages instead (man_off.go).
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages (section 1) into DIR",
		Long:   `man writes one page per command (connwatch.1, connwatch-agent.1, ...) into DIR, made from the commands' help. The release script ships them; 'man -l DIR/connwatch.1' reads one.`,
		Hidden: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("man takes one DIR")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeManPages(cmd.Root(), args[0])
		},
	}
}
