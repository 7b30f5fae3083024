package alarm_test

import (
	"fmt"
	"time"

	"github.com/connwatch/connwatch/internal/alarm"
)

// The fifth row of the user guide's first table: 3 of 3 datapoints to
// alarm, one breaching datapoint between missing ones. Each way of treating
// missing data gives another state.
func ExampleEvaluateMarks() {
	series, err := alarm.ParseNotation("- - X - -")
	if err != nil {
		panic(err)
	}
	for _, treat := range []alarm.TreatMissingData{alarm.TreatMissing, alarm.TreatIgnore, alarm.TreatBreaching, alarm.TreatNotBreaching} {
		cfg := alarm.Config{EvaluationPeriods: 3, DatapointsToAlarm: 3, TreatMissingData: treat}
		res, err := alarm.EvaluateMarks(cfg, series, alarm.StateOK)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-12s %-5s %s\n", treat, res.State, res.Reason)
	}
	// Output:
	// missing      ALARM premature alarm rule: every real datapoint breaches and the oldest is 3 periods old, at least 3
	// ignore       OK    premature alarm rule: every real datapoint breaches and the oldest is 3 periods old, at least 3; ignore keeps OK
	// breaching    ALARM 3 of 3 datapoints breaching, 3 needed: 1 real datapoint plus 2 missing ones filled in as breaching
	// notBreaching OK    1 of 3 datapoints breaching, 3 needed: 1 real datapoint plus 2 missing ones filled in as notBreaching
}

// An Evaluator for "no SSH connection for 3 minutes" is fed one datapoint a
// minute and reports only the changes of state, on which actions run.
func ExampleEvaluator() {
	e, err := alarm.NewEvaluator(alarm.Config{
		Period:             time.Minute,
		EvaluationPeriods:  3,
		ComparisonOperator: alarm.LessThanThreshold,
		Threshold:          1,
	}, alarm.InitialState)
	if err != nil {
		panic(err)
	}
	start := time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)
	for i, connections := range []float64{1, 0, 0, 0, 0, 2} {
		at := start.Add(time.Duration(i) * time.Minute)
		transitions, err := e.Observe(at, alarm.Value(connections))
		if err != nil {
			panic(err)
		}
		for _, t := range transitions {
			fmt.Printf("%s %s -> %s: %s\n", t.Time.Format("15:04"), t.From, t.To, t.Reason)
		}
	}
	// Output:
	// 12:00 INSUFFICIENT_DATA -> OK: 0 of 1 real datapoint breaching, 3 needed; 2 missing datapoints not counted (treat missing data missing)
	// 12:03 OK -> ALARM: 3 of the 3 most recent datapoints breaching, 3 needed
	// 12:05 ALARM -> OK: 2 of the 3 most recent datapoints breaching, 3 needed
}
