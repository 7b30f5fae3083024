//go:build manpages

// The man page generator (cobra/doc, and the markdown renderer under it,
// 0.2 MB of tables made at start-up) is built only into the binary that
// scripts/release.sh runs to write the pages, not into the one shipped.

package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/connwatch/connwatch/internal/version"
)

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
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // pages stay the same from build to build
			in := version.Get()
			hdr := &doc.GenManHeader{
				Title:   "CONNWATCH",
				Section: "1",
				Source:  "connwatch " + in.Version,
				Manual:  "connwatch manual",
			}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			return nil
		},
	}
}
