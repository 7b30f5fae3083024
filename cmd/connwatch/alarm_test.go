package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// execAlarm runs the alarm command on its own, as the root runs it.
func execAlarm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newAlarmCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestAlarmEval(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--datapoints", "0 - X - X", "--evaluation-periods", "3"}, "OK"},
		{[]string{"--datapoints", "0 X X - X", "--evaluation-periods", "3"}, "ALARM"},
		{[]string{"--datapoints", "- - - - -", "--evaluation-periods", "3"}, "INSUFFICIENT_DATA"},
		{[]string{"--datapoints", "- - - - -", "--evaluation-periods", "3", "--treat-missing-data", "ignore", "--state", "OK"}, "OK"},
		{[]string{"--datapoints", "- - - - -", "--evaluation-periods", "3", "--treat-missing-data", "breaching"}, "ALARM"},
		{[]string{"--datapoints", "- - X - -", "--evaluation-periods", "3", "--datapoints-to-alarm", "3", "--treat-missing-data", "missing"}, "ALARM"},
		{[]string{"--datapoints", "- - X - -", "--evaluation-periods", "3", "--treat-missing-data", "notBreaching"}, "OK"},
		{[]string{"--datapoints", "- - - - 0", "--evaluation-periods", "3", "--datapoints-to-alarm", "2", "--treat-missing-data", "breaching"}, "ALARM"},
		{[]string{"--datapoints", "X 0 X", "--evaluation-periods", "3", "--datapoints-to-alarm", "2"}, "ALARM"},
		// Without the wider range the older breaching datapoints are out.
		{[]string{"--datapoints", "X X - X -", "--evaluation-periods", "3", "--treat-missing-data", "notBreaching", "--evaluation-range", "3"}, "OK"},
		{[]string{"--datapoints", "X X - X -", "--evaluation-periods", "3", "--treat-missing-data", "notBreaching"}, "ALARM"},
	}
	for _, tt := range tests {
		out, err := execAlarm(t, append([]string{"eval"}, tt.args...)...)
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if out != tt.want+"\n" {
			t.Errorf("%q: printed %q, want %q", tt.args, out, tt.want+"\n")
		}
	}
}

func TestAlarmEvalJSON(t *testing.T) {
	out, err := execAlarm(t, "eval", "--datapoints", "0 - X - X", "--evaluation-periods", "3", "--datapoints-to-alarm", "2", "--state", "OK", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		State         string   `json:"state"`
		PreviousState string   `json:"previous_state"`
		Changed       bool     `json:"changed"`
		Reason        string   `json:"reason"`
		Range         []string `json:"range"`
		Evaluated     []string `json:"evaluated"`
		Filled        int      `json:"filled"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if got.State != "ALARM" || got.PreviousState != "OK" || !got.Changed || got.Filled != 0 ||
		strings.Join(got.Range, " ") != "0 - X - X" || strings.Join(got.Evaluated, " ") != "0 X X" ||
		!strings.Contains(got.Reason, "2 of the 3 most recent datapoints breaching") {
		t.Errorf("got %+v", got)
	}
}

func TestAlarmUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the message
	}{
		{[]string{"eval", "--datapoints", "0 Y X", "--evaluation-periods", "3"}, `"Y"`},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--datapoints-to-alarm", "4"}, "datapoints to alarm 4"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "0"}, "evaluation periods 0"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--datapoints-to-alarm", "0"}, "--datapoints-to-alarm 0"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--evaluation-range", "2"}, "evaluation range 2"},
		// Out of bounds: refused before anything is sized by them.
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "9223372036854775807"}, "evaluation periods 9223372036854775807"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "-9223372036854775808"}, "evaluation periods -9223372036854775808"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "86401"}, "between 1 and 86400"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--evaluation-range", "100000000000"}, "evaluation range 100000000000"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--evaluation-range", "9223372036854775807"}, "evaluation range 9223372036854775807"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--datapoints-to-alarm", "9223372036854775807"}, "datapoints to alarm 9223372036854775807"},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--treat-missing-data", "notbreaching"}, `"notbreaching"`},
		{[]string{"eval", "--datapoints", "0 - X", "--evaluation-periods", "3", "--state", "alarm"}, `"alarm"`},
		{[]string{"eval", "--datapoints", "  ", "--evaluation-periods", "3"}, "empty"},
		{[]string{"eval", "--evaluation-periods", "3"}, "--datapoints is required"},
		{[]string{"eval", "--datapoints", "X"}, "--evaluation-periods is required"},
		{[]string{"eval", "extra", "--datapoints", "X", "--evaluation-periods", "1"}, `"extra"`},
		{[]string{"evaluate"}, `"evaluate"`},
	}
	for _, tt := range tests {
		out, err := execAlarm(t, tt.args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", tt.args, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %q does not say %s", tt.args, err, tt.want)
		}
		if out != "" {
			t.Errorf("%q: printed %q on error", tt.args, out)
		}
	}
}

func TestAlarmHelp(t *testing.T) {
	out, err := execAlarm(t, "eval", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"oldest first", "evaluation range", "N+2", "premature alarm", "INSUFFICIENT_DATA", "notBreaching", "keeps its state", "Exit status", "Examples:"} {
		if !strings.Contains(out, want) {
			t.Errorf("eval --help does not say %q", want)
		}
	}
	out, err = execAlarm(t)
	if err != nil || !strings.Contains(out, "eval") {
		t.Errorf("alarm alone: %v, printed %q; want help listing eval", err, out)
	}
}

// TestAlarmRun goes through run, as the binary does.
func TestAlarmRun(t *testing.T) {
	code, stdout, _ := runCLI(t, []string{"alarm", "eval", "--datapoints", "- - X - -", "--evaluation-periods", "3"})
	if code != exitOK || stdout != "ALARM\n" {
		t.Errorf("exit %d, printed %q; want 0 and ALARM", code, stdout)
	}
	code, _, stderr := runCLI(t, []string{"alarm", "eval", "--datapoints", "0 - Q", "--evaluation-periods", "3"})
	if code != exitUsage || !strings.Contains(stderr, `"Q"`) {
		t.Errorf("exit %d, stderr %q; want %d naming the bad token", code, stderr, exitUsage)
	}
	code, _, stderr = runCLI(t, []string{"alarm", "eval", "--datapoints", "0", "--evaluation-periods", "three"})
	if code != exitUsage {
		t.Errorf("bad flag value: exit %d (stderr %q), want %d", code, stderr, exitUsage)
	}
	// Once a panic, once out of memory.
	for _, args := range [][]string{
		{"--evaluation-periods", "9223372036854775807"},
		{"--evaluation-periods", "3", "--evaluation-range", "100000000000"},
	} {
		code, stdout, stderr := runCLI(t, append([]string{"alarm", "eval", "--datapoints", "0 - X"}, args...))
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, "must be between") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and the bound", args, code, stdout, stderr, exitUsage)
		}
	}
	// The bounds themselves work.
	code, stdout, stderr = runCLI(t, []string{"alarm", "eval", "--datapoints", "X", "--evaluation-periods", "86400", "--evaluation-range", "172800", "--treat-missing-data", "breaching"})
	if code != exitOK || stdout != "ALARM\n" {
		t.Errorf("at the bounds: exit %d, stdout %q, stderr %q; want ALARM", code, stdout, stderr)
	}
}
