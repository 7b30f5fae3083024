package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/version"
)

// writeVersion prints info the way Prometheus and its exporters do, so
// fleet tooling that greps "version" lines reads it the same.
func writeVersion(w io.Writer, in version.Info) error {
	_, err := fmt.Fprintf(w, "connwatch, version %s (revision: %s)\n  build date: %s\n  go version: %s\n  platform:   %s\n",
		in.Version, in.Revision, in.Date, in.GoVersion, in.Platform)
	return err
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Long: `Print which build of connwatch this is: the version, the commit it was
built from, the build date and the Go version. The same as --version.
Release builds carry what the release script stamped in; a "go install"
build shows what the Go toolchain recorded ("(devel)" from a work tree).`,
		Args: noArgs("version"),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := version.Get()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			return writeVersion(cmd.OutOrStdout(), in)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {version, revision, date, goversion, platform}")
	return cmd
}

// versionText is what --version prints: the same as "connwatch version".
func versionText() string {
	var b strings.Builder
	_ = writeVersion(&b, version.Get())
	// cobra treats the template as a text/template.
	return strings.ReplaceAll(b.String(), "{{", `{{"{{"}}`)
}
