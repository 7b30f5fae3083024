package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sshconfig"
)

// Values offered by shell completion for flags that take one of a few.
var (
	treatMissingValues = []string{"notBreaching", "missing", "breaching", "ignore"}
	logLevelValues     = []string{"debug", "info", "warn", "error"}
	logFormatValues    = []string{"text", "json"}
)

// fixedValues completes a flag with one of values.
func fixedValues(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// listValues completes a comma-separated list flag: the part after the
// last comma, from the values not already in the list.
func listValues(values ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		prefix := ""
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			prefix = toComplete[:i+1]
		}
		have := strings.Split(prefix, ",")
		var out []string
		for _, v := range values {
			if !slices.Contains(have, v) {
				out = append(out, prefix+v)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// kindNames are the session kinds, as flags and the config file name them.
func kindNames() []string {
	var out []string
	for _, k := range session.Kinds() {
		out = append(out, string(k))
	}
	return out
}

// sshHostNames lists the Host names of configFile if set, else of
// ~/.ssh/config and /etc/ssh/ssh_config. Unreadable files give nothing.
func sshHostNames(configFile string) []string {
	var files []string
	if configFile != "" {
		files = []string{configFile}
	} else {
		if home, err := os.UserHomeDir(); err == nil {
			files = append(files, filepath.Join(home, ".ssh", "config"))
		}
		files = append(files, sshconfig.SystemClientConfig)
	}
	var out []string
	for _, path := range files {
		base := filepath.Dir(path)
		if path == sshconfig.SystemClientConfig {
			base = sshconfig.SystemDir
		}
		f, err := sshconfig.ReadFile(path, sshconfig.Client, base)
		if err != nil {
			continue
		}
		for _, h := range f.HostNames() {
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// sshHosts completes ssh_config Host names (sshHostNames of the file
// the command's configFlag names) not already given. Completion never
// fails loudly.
func sshHosts(configFlag string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		file, _ := cmd.Flags().GetString(configFlag)
		var out []string
		for _, h := range sshHostNames(file) {
			if strings.HasPrefix(h, toComplete) && !slices.Contains(args, h) {
				out = append(out, h)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// registerAgentCompletions sets value completion on the agent's flags.
func registerAgentCompletions(cmd *cobra.Command) {
	must := func(err error) {
		if err != nil {
			panic(err) // a flag name typo: caught by every test run
		}
	}
	must(cmd.RegisterFlagCompletionFunc("action", fixedValues(config.Actions...)))
	must(cmd.RegisterFlagCompletionFunc("treat-missing-data", fixedValues(treatMissingValues...)))
	must(cmd.RegisterFlagCompletionFunc("keep-awake-kinds", listValues(kindNames()...)))
	must(cmd.RegisterFlagCompletionFunc("log-level", fixedValues(logLevelValues...)))
	must(cmd.RegisterFlagCompletionFunc("log-format", fixedValues(logFormatValues...)))
	must(cmd.RegisterFlagCompletionFunc("tunnel", sshHosts("tunnel-ssh-config")))
	must(cmd.MarkFlagFilename("config", "toml"))
	must(cmd.MarkFlagFilename("tunnel-ssh-config"))
	must(cmd.MarkFlagFilename("web.config.file", "yml", "yaml"))
	must(cmd.MarkFlagFilename("webhook-url-file"))
	for _, dir := range []string{"state-dir", "spool-dir", "proc"} {
		must(cmd.MarkFlagDirname(dir))
	}
}
