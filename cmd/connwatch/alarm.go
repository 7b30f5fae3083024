package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/alarm"
)

func newAlarmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alarm",
		Short: "Evaluate CloudWatch-style alarms locally",
		Long: `alarm works with alarms that follow Amazon CloudWatch's rules: N
evaluation periods, M datapoints to alarm, a threshold, and a choice of how
to treat missing data. connwatch evaluates them exactly as CloudWatch
documents, so you can check what an alarm will do before you create it.`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newAlarmEvalCmd())
	return cmd
}

// alarmEvalJSON is the output of alarm eval --json.
type alarmEvalJSON struct {
	State         alarm.State  `json:"state"`
	PreviousState alarm.State  `json:"previous_state"`
	Changed       bool         `json:"changed"`
	Reason        string       `json:"reason"`
	Range         []alarm.Mark `json:"range"`
	Evaluated     []alarm.Mark `json:"evaluated"`
	Filled        int          `json:"filled"`
}

func newAlarmEvalCmd() *cobra.Command {
	var (
		datapoints string
		n, m, r    int
		treat      string
		state      string
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "eval --datapoints SERIES --evaluation-periods N [flags]",
		Short: "Evaluate an alarm over a series of datapoints",
		Long: `eval prints the state a CloudWatch alarm goes to for a series of
datapoints: OK, ALARM or INSUFFICIENT_DATA. It follows the CloudWatch user
guide, "How alarm state is evaluated when data is missing", and gives the
results of every example in that section's tables.

--datapoints lists the most recent periods, oldest first, separated by
spaces:
  0   a datapoint within the threshold (not breaching)
  X   a datapoint that breaches the threshold
  -   a period with no datapoint (missing)
The comparison is implied: X breaches, 0 does not.

The alarm goes to ALARM when at least M (--datapoints-to-alarm, default
N) of the N (--evaluation-periods) datapoints it evaluates breach. They do
not have to be consecutive: with 2 of 3, "X 0 X" is ALARM.

When data is missing, CloudWatch looks further back than N periods, into
what it calls the evaluation range. AWS does not publish its length; the
user guide's examples use 5 periods for N = 3, and so the default here is
N+2 (change it with --evaluation-range). Only the last periods of the
series that fit in the range count: older ones are ignored, and when the
series is shorter, the periods before it count as missing. Then:

  - If the range holds at least N real datapoints, the N most recent of
    them decide, skipping the missing periods. How missing data is treated
    does not matter.
  - If it holds fewer, every real datapoint in the range counts, and
    missing periods make up the rest of the N, treated as
    --treat-missing-data says:
      breaching      a missing period counts as breaching
      notBreaching   a missing period counts as within the threshold
      missing        missing periods do not count (the default): ALARM
                     when M real datapoints breach; also ALARM when every
                     real datapoint in the range breaches and the oldest
                     of them is at least M periods old (what the user
                     guide calls the premature alarm state); otherwise
                     OK. With no datapoint at all in the range:
                     INSUFFICIENT_DATA.
      ignore         as missing, except that where missing gives
                     INSUFFICIENT_DATA or alarms by the "at least M
                     periods old" rule, the alarm keeps its state.

--state is the state before this evaluation: it matters for ignore, and
for "changed" in the JSON output. It defaults to INSUFFICIENT_DATA, the
state CloudWatch gives a new alarm. Alarm actions run only when the state
changes.

--json prints {state, previous_state, changed, reason, range, evaluated,
filled}: range is the evaluation range, evaluated the N datapoints that
decided (a missing period filled in shows as what it counted as, or as -
when it did not count), filled how many missing periods made up the N.

N is at most 86400 (one day of one-second periods; CloudWatch itself
allows at most one day of periods shorter than an hour) and
--evaluation-range at most 172800.

Exit status: 0 when the alarm was evaluated, whatever its state; 2 on
usage errors (a token other than 0, X and -, M greater than N, N or the
range out of bounds, an unknown --treat-missing-data or --state).`,
		Example: `  # the user guide's first table, row 1 (3 of 3): OK
  connwatch alarm eval --datapoints "0 - X - X" --evaluation-periods 3

  # 2 of 3, missing data treated as breaching: ALARM
  connwatch alarm eval --datapoints "- - - - 0" --evaluation-periods 3 \
      --datapoints-to-alarm 2 --treat-missing-data breaching

  # one row, every way of treating missing data
  for t in missing ignore breaching notBreaching; do
    connwatch alarm eval --datapoints "- - X - -" --evaluation-periods 3 \
        --treat-missing-data "$t" --state OK
  done

  connwatch alarm eval --datapoints "0 - X - X" --evaluation-periods 3 --json | jq -r .reason`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("alarm eval takes no arguments, got %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			flags := cmd.Flags()
			if !flags.Changed("datapoints") {
				return usagef("--datapoints is required")
			}
			if !flags.Changed("evaluation-periods") {
				return usagef("--evaluation-periods is required")
			}
			marks, err := alarm.ParseNotation(datapoints)
			if err != nil {
				return usagef("--datapoints: %w", err)
			}
			if len(marks) == 0 {
				return usagef("--datapoints is empty: give datapoints as 0, X or -")
			}
			if flags.Changed("datapoints-to-alarm") && m < 1 {
				return usagef("--datapoints-to-alarm %d: %w", m, alarm.ErrDatapointsToAlarm)
			}
			if flags.Changed("evaluation-range") && r < 1 {
				return usagef("--evaluation-range %d: %w", r, alarm.ErrEvaluationRange)
			}
			tmd, err := alarm.ParseTreatMissingData(treat)
			if err != nil {
				return usagef("--treat-missing-data: %w", err)
			}
			current, err := alarm.ParseState(state)
			if err != nil {
				return usagef("--state: %w", err)
			}
			cfg := alarm.Config{
				EvaluationPeriods: n,
				DatapointsToAlarm: m,
				EvaluationRange:   r,
				TreatMissingData:  tmd,
			}
			res, err := alarm.EvaluateMarks(cfg, marks, current)
			if err != nil {
				return usagef("%w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				err := enc.Encode(alarmEvalJSON{
					State:         res.State,
					PreviousState: res.Previous,
					Changed:       res.Changed(),
					Reason:        res.Reason,
					Range:         res.Range,
					Evaluated:     res.Evaluated,
					Filled:        res.Filled,
				})
				if err != nil {
					return fmt.Errorf("encode result: %w", err)
				}
				return nil
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), res.State)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&datapoints, "datapoints", "", `the most recent datapoints, oldest first: 0 (within), X (breaching), - (missing), e.g. "0 - X - X"`)
	f.IntVar(&n, "evaluation-periods", 0, "N, how many datapoints decide the state (required)")
	f.IntVar(&m, "datapoints-to-alarm", 0, "M, how many of the N must breach for ALARM (default N)")
	f.IntVar(&r, "evaluation-range", 0, "how many recent periods CloudWatch looks back over when data is missing (default N+2)")
	f.StringVar(&treat, "treat-missing-data", string(alarm.TreatMissing), "missing, notBreaching, breaching or ignore")
	f.StringVar(&state, "state", string(alarm.InitialState), "the state before this evaluation: OK, ALARM or INSUFFICIENT_DATA")
	f.BoolVar(&asJSON, "json", false, "print JSON: {state, previous_state, changed, reason, range, evaluated, filled}")
	return cmd
}
