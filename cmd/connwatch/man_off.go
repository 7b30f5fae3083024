//go:build !manpages

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newManCmd stands in for the man page generator, which only a build
// with -tags manpages has (see man.go).
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages (section 1) into DIR",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("man: this connwatch was built without the man page generator (go build -tags manpages); the packages ship the pages")
		},
	}
}
