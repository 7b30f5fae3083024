package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/doctor"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/tunnel"
)

// exitFindings is doctor's exit status when it found warnings or errors.
const exitFindings = 3

// doctorFlags are the flags of connwatch doctor.
type doctorFlags struct {
	host        string
	sshConfig   string
	sshdConfig  string
	connection  string
	agentConfig string
	fix         bool
	fixFile     string
	reload      bool
	json        bool
}

func newDoctorCmd() *cobra.Command {
	var f doctorFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Audit sshd or ssh keepalive, idle and login settings, and fix them",
		Long: `doctor reads the settings sshd uses (sshd -T) and explains what they mean
for connwatch: how long a client that vanished keeps its session (and an
idle-stopping machine awake), how many unauthenticated connections bots
can keep pending, whether logins reach logind (UsePAM) and the log
(LogLevel), and which OpenSSH process titles to expect. When sshd -T
cannot run (no privileges or host keys) the files are read instead,
Includes followed; Match blocks are then evaluated only for --connection.

With --host HOST it audits the client instead (ssh -G HOST): how long ssh
takes to notice a dead link, what the keepalives cost a day, and whether
forwards that fail make ssh exit.

--fix writes only keepalive and login-grace settings, never anything
about who may log in: for sshd a drop-in (50-connwatch.conf in the
directory the sshd config Includes, or --fix-file), for ssh a marked
block (# BEGIN connwatch ... # END connwatch) at the top of ~/.ssh/config
or the -F file. The previous file is kept as FILE.connwatch-bak, the new
one written atomically and validated (sshd -t, ssh -G) before anything is
reloaded; if validation fails the previous content is restored. sshd is
reloaded (SIGHUP to the pid in its PidFile) only with --reload. A FILE
that is a symbolic link (dotfiles) stays one: the file it leads to is
written, keeping its mode and owner; a link to nothing, or a link owned by
another user than its target, is refused.

Exit status: 0 no warnings, 3 warnings or errors found, 1 sshd/ssh could
not be run or the fix was refused, 2 usage.`,
		Example: `  connwatch doctor
  connwatch doctor --agent-config /etc/connwatch/agent.toml --connection user=alice,host=laptop,addr=203.0.113.5
  connwatch doctor --fix --reload
  connwatch doctor --host devbox --fix
  connwatch doctor --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("doctor takes no arguments, got %q", args[0])
			}
			return f.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			d := doctorRun{flags: f, runner: sshconfig.Exec{}, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
			return d.run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.host, "host", "", "audit the ssh client settings for `HOST` (ssh -G HOST) instead of sshd")
	fl.StringVarP(&f.sshConfig, "ssh-config", "F", "", "ssh client config `FILE` (ssh -F), with --host")
	fl.StringVar(&f.sshdConfig, "sshd-config", "", "sshd config `FILE` (sshd -T -f FILE); default sshd's own")
	fl.StringVar(&f.connection, "connection", "", "evaluate Match blocks for `SPEC` user=NAME,host=HOST,addr=ADDR (sshd -T -C)")
	fl.StringVar(&f.agentConfig, "agent-config", "", "connwatch agent config `FILE`: compare keepalives with its idle window")
	fl.BoolVar(&f.fix, "fix", false, "write the recommended keepalive settings (see above)")
	fl.StringVar(&f.fixFile, "fix-file", "", "with --fix, write to `FILE` instead of the default drop-in or ssh config")
	fl.BoolVar(&f.reload, "reload", false, "with --fix, reload sshd (SIGHUP) after the fix validated")
	fl.BoolVar(&f.json, "json", false, `print {"findings":[...]} as JSON`)
	return cmd
}

func (f doctorFlags) validate() error {
	switch {
	case f.host != "" && (f.sshdConfig != "" || f.connection != "" || f.reload):
		return usagef("--host audits the client: --sshd-config, --connection and --reload are for sshd")
	case f.host == "" && f.sshConfig != "":
		return usagef("--ssh-config needs --host")
	case (f.fixFile != "" || f.reload) && !f.fix:
		return usagef("--fix-file and --reload need --fix")
	case f.host != "" && f.agentConfig != "":
		return usagef("--agent-config is for sshd's keepalives, not with --host")
	}
	if f.connection != "" {
		if _, err := sshconfig.ParseConnection(f.connection); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// doctorRun is one run of connwatch doctor.
type doctorRun struct {
	flags  doctorFlags
	runner sshconfig.Runner
	out    io.Writer
	errOut io.Writer
	// notes are lines for the human output after the findings (what the
	// fix did, how to reload).
	notes []string
	fix   *fixReport
}

// fixReport is the fix part of the JSON output.
type fixReport struct {
	File string `json:"file"`
	// Target is the file written when File is a symbolic link.
	Target   string `json:"target,omitempty"`
	Backup   string `json:"backup,omitempty"`
	Changed  bool   `json:"changed"`
	Reloaded int    `json:"reloaded_pid,omitempty"`
}

func (d *doctorRun) run(ctx context.Context) error {
	var title string
	var findings []doctor.Finding
	var err error
	if d.flags.host != "" {
		title = "ssh settings for " + d.flags.host + " (ssh -G)"
		findings, err = d.client(ctx)
	} else {
		title = "sshd settings (sshd -T)"
		findings, err = d.server(ctx)
	}
	if err != nil {
		return err
	}
	if d.flags.json {
		enc := json.NewEncoder(d.out)
		enc.SetIndent("", "  ")
		if findings == nil {
			findings = []doctor.Finding{}
		}
		if err := enc.Encode(struct {
			Findings []doctor.Finding `json:"findings"`
			Fix      *fixReport       `json:"fix,omitempty"`
		}{findings, d.fix}); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	} else {
		writeFindings(d.out, title, findings)
		for _, n := range d.notes {
			fmt.Fprintln(d.out, n)
		}
	}
	if doctor.HasProblems(findings) {
		return exitCodeError{code: exitFindings, err: errors.New("doctor found problems")}
	}
	return nil
}

// client audits ssh -G HOST and applies the fix.
func (d *doctorRun) client(ctx context.Context) ([]doctor.Finding, error) {
	o := sshconfig.ClientOptions{ConfigFile: d.flags.sshConfig, Host: d.flags.host}
	s, err := sshconfig.ClientSettings(ctx, d.runner, o)
	if err != nil {
		return nil, err
	}
	findings, fix := doctor.CheckClient(doctor.Client{Host: d.flags.host, Settings: s, StandbyAfter: tunnel.DefaultStandbyAfter})
	if !d.flags.fix {
		return findings, nil
	}
	if len(fix) == 0 {
		d.notes = append(d.notes, "Nothing to fix.")
		return findings, nil
	}
	file := d.flags.fixFile
	if file == "" {
		file = d.flags.sshConfig
	}
	if file == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("find ~/.ssh/config: %w", err)
		}
		file = filepath.Join(home, ".ssh", "config")
	}
	res, err := doctor.WriteClientFix(ctx, doctor.ClientFix{Runner: d.runner, File: file, Host: d.flags.host}, fix)
	if err != nil {
		return nil, err
	}
	d.reportFix(res)
	// Audit again: the findings after the fix.
	if s, err = sshconfig.ClientSettings(ctx, d.runner, o); err != nil {
		return nil, err
	}
	findings, _ = doctor.CheckClient(doctor.Client{Host: d.flags.host, Settings: s, StandbyAfter: tunnel.DefaultStandbyAfter})
	return findings, nil
}

// server audits sshd and applies the fix.
func (d *doctorRun) server(ctx context.Context) ([]doctor.Finding, error) {
	in, err := d.serverInput(ctx)
	if err != nil {
		return nil, err
	}
	findings, fix := doctor.CheckServer(in)
	if !d.flags.fix {
		return findings, nil
	}
	if len(fix) == 0 {
		d.notes = append(d.notes, "Nothing to fix.")
		return findings, nil
	}
	mainConfig := d.flags.sshdConfig
	if mainConfig == "" {
		mainConfig = sshconfig.SSHDConfig
	}
	target := d.flags.fixFile
	if target == "" {
		if target, err = doctor.DropInTarget(mainConfig); err != nil {
			return nil, err
		}
	}
	res, err := doctor.WriteServerFix(ctx, doctor.ServerFix{Runner: d.runner, File: target, MainConfig: d.flags.sshdConfig}, fix)
	if err != nil {
		return nil, err
	}
	d.reportFix(res)
	// Audit again: the findings after the fix, as the reloaded sshd will
	// see them.
	if in, err = d.serverInput(ctx); err != nil {
		return nil, err
	}
	findings, _ = doctor.CheckServer(in)
	pidFile := in.Settings.Get("pidfile")
	switch {
	case !res.Changed:
	case d.flags.reload:
		pid, err := doctor.Reload(pidFile, "/proc")
		if err != nil {
			return nil, err
		}
		d.fix.Reloaded = pid
		d.notes = append(d.notes, fmt.Sprintf("Reloaded sshd (SIGHUP to pid %d).", pid))
	default:
		d.notes = append(d.notes, fmt.Sprintf("sshd reads the new settings when reloaded: kill -HUP $(cat %s)  (or: systemctl reload ssh)", pidFile))
	}
	return findings, nil
}

// serverInput reads sshd's settings (sshd -T, else the files), its
// version and the agent's idle window.
func (d *doctorRun) serverInput(ctx context.Context) (doctor.Server, error) {
	var in doctor.Server
	var conn *sshconfig.Connection
	if d.flags.connection != "" {
		conn, _ = sshconfig.ParseConnection(d.flags.connection) // validated
	}
	file := d.flags.sshdConfig
	if file == "" {
		file = sshconfig.SSHDConfig
	}
	s, err := sshconfig.ServerSettings(ctx, d.runner, sshconfig.SSHDOptions{ConfigFile: d.flags.sshdConfig, Connection: conn})
	switch {
	case errors.Is(err, sshconfig.ErrCannotEvaluate):
		f, ferr := sshconfig.ReadFile(file, sshconfig.Server, sshconfig.SystemDir)
		if ferr != nil {
			return in, fmt.Errorf("%w; reading the files instead: %w", err, ferr)
		}
		in.Settings, in.Unevaluated = f.Evaluate(conn, sshconfig.ServerDefaults)
		in.FallbackReason = err
	case err != nil:
		return in, err
	default:
		in.Settings = s
		// sshd -T without -C ignores Match blocks: say that there are some.
		if conn == nil {
			if f, ferr := sshconfig.ReadFile(file, sshconfig.Server, sshconfig.SystemDir); ferr == nil {
				in.Unevaluated = f.Blocks
			}
		}
	}
	if v, err := sshconfig.BinaryVersion(ctx, d.runner, sshconfig.SSHDPath); err == nil {
		in.Version = v
	} else if v, err := sshconfig.BinaryVersion(ctx, d.runner, sshconfig.SSHPath); err == nil {
		in.Version = v
	}
	if d.flags.agentConfig != "" {
		cfg, err := config.Load(d.flags.agentConfig)
		if err != nil {
			return in, err
		}
		in.IdleWindow = cfg.Idle.IdleAfter.Duration
	}
	return in, nil
}

func (d *doctorRun) reportFix(res doctor.Result) {
	d.fix = &fixReport{File: res.File, Backup: res.Backup, Changed: res.Changed}
	if res.Target != "" && res.Target != res.File {
		d.fix.Target = res.Target
	}
	if !res.Changed {
		d.notes = append(d.notes, fmt.Sprintf("%s already holds the fix.", res.File))
		return
	}
	n := fmt.Sprintf("Wrote %s (validated)", res.File)
	if d.fix.Target != "" {
		n = fmt.Sprintf("Wrote %s through its link to %s (validated)", res.File, res.Target)
	}
	if res.Backup != "" {
		n += "; previous content in " + res.Backup
	}
	d.notes = append(d.notes, n+".", "Findings above are after the fix.")
}

// writeFindings prints findings for people.
func writeFindings(w io.Writer, title string, fs []doctor.Finding) {
	fmt.Fprintf(w, "%s:\n", title)
	if len(fs) == 0 {
		fmt.Fprintln(w, "  nothing to report")
	}
	for _, f := range fs {
		fmt.Fprintf(w, "\n%-7s %s: %s = %s\n", strings.ToUpper(string(f.Severity)), f.ID, f.Setting, f.Value)
		fmt.Fprintf(w, "        %s\n", f.Message)
		if f.Fix != "" {
			fmt.Fprintf(w, "        fix: %s\n", f.Fix)
		}
	}
	var warn int
	for _, f := range fs {
		if f.Severity != doctor.Info {
			warn++
		}
	}
	fmt.Fprintf(w, "\n%d finding(s), %d warning(s) or error(s)\n", len(fs), warn)
}
