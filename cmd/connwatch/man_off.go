//go:build !manpages

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// writeManPages stands in for the man page generator, which only a
// build with -tags manpages has (see man.go).
func writeManPages(*cobra.Command, string) error {
	return errors.New("man: this connwatch was built without the man page generator (go build -tags manpages); the packages ship the pages")
}
