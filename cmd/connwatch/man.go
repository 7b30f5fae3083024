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

// writeManPages writes one page per command of root into dir, made if
// need be.
func writeManPages(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write man pages: %w", err)
	}
	root.DisableAutoGenTag = true // pages stay the same from build to build
	hdr := &doc.GenManHeader{
		Title:   "CONNWATCH",
		Section: "1",
		Source:  "connwatch " + version.Get().Version,
		Manual:  "connwatch manual",
	}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return fmt.Errorf("write man pages: %w", err)
	}
	return nil
}
