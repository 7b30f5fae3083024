package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/report"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// uptime is how long this machine has been up, by the clock from which
// the agent measures start_hold_max.
func uptime(t *testing.T) time.Duration {
	t.Helper()
	up := clock.Real{}.Elapsed()
	if up <= 0 {
		t.Skip("CLOCK_BOOTTIME cannot be read")
	}
	return up
}

// startHoldAgent runs `connwatch agent --action ec2-stop` in this process
// against the loopback AWS server, with a two-second idle window and no
// boot grace, until the test ends; it returns the events file, the state
// directory, the procfs tree and a function that stops the agent and
// returns its log.
func startHoldAgent(t *testing.T, startHoldMax time.Duration) (events, state, proc string, stop func() string) {
	t.Helper()
	dir := t.TempDir()
	events, state, proc = filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "state"), emptyProc(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, stderr := runCLIContext(ctx, []string{"agent", "--proc", proc, "--state-dir", state, "--events", events,
			"--period", "1s", "--idle-after", "2s", "--boot-grace", "0", "--warn-before", "1s", "--wall=false",
			"--metrics-addr", "", "--sshd-log", "", "--action", "ec2-stop",
			"--start-hold-max", fmt.Sprintf("%dms", startHoldMax.Milliseconds())})
		done <- result{code, stderr}
	}()
	var log string
	stopped := false
	stop = func() string {
		if !stopped {
			stopped = true
			cancel()
			select {
			case r := <-done:
				if r.code != exitOK {
					t.Errorf("agent exit %d: %s", r.code, r.stderr)
				}
				log = r.stderr
			case <-time.After(10 * time.Second):
				t.Error("the agent did not stop")
			}
		}
		return log
	}
	t.Cleanup(func() { stop() })
	return events, state, proc, stop
}

// waitStop waits (bounded) for the agent's StopInstances call.
func waitStop(t *testing.T, aws *awstest.Server, within time.Duration, events string) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if calls := aws.Calls("ec2", "StopInstances"); len(calls) > 0 {
			return calls[0].Time
		}
		if time.Now().After(deadline) {
			t.Fatalf("no StopInstances within %v; events:\n%s", within, readFile(events))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentStartHold runs the real agent with an EC2 action against the
// loopback metadata service and EC2: the instance tag
// connwatch:hold-until keeps the idle instance up until the time it
// names (no warning, no stop before), `connwatch status --json` shows
// the hold, and the stop comes once the time has passed. A tag far ahead
// holds only until start_hold_max after boot; without tags in the
// metadata the agent says how to enable them and stops as usual.
func TestAgentStartHold(t *testing.T) {
	up := uptime(t)
	t.Run("tag", func(t *testing.T) {
		aws := awstest.New(t)
		aws.Env(t)
		aws.SetInstanceMetadataTags(true)
		until := time.Now().Add(5 * time.Second).UTC().Truncate(time.Second)
		aws.SetInstanceTag(hold.StartHoldTag, until.Format(time.RFC3339), false)
		events, state, proc, stop := startHoldAgent(t, up+time.Hour)

		// While it holds, status shows it.
		var st report.Status
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			code, stdout, stderr := runCLI(t, []string{"status", "--json", "--state-dir", state, "--proc", proc})
			if code != exitOK {
				t.Fatalf("status: exit %d: %s", code, stderr)
			}
			if err := json.Unmarshal([]byte(stdout), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, stdout)
			}
			if st.Agent != nil && len(st.Agent.Policy.Holds) > 0 || time.Now().After(deadline) {
				break
			}
		}
		if st.Agent == nil || len(st.Agent.Policy.Holds) != 1 {
			t.Fatalf("status while held: %+v", st.Agent)
		}
		if h := st.Agent.Policy.Holds[0]; h.Kind != policy.HoldStart || h.Name != hold.StartHoldTag || h.Until == nil || !h.Until.Equal(until) {
			t.Errorf("status hold %+v, want start-hold until %v", h, until)
		}

		stoppedAt := waitStop(t, aws, time.Until(until)+10*time.Second, events)
		if stoppedAt.Before(until) {
			t.Errorf("stopped at %v, before the tag's %v", stoppedAt, until)
		}
		if state, _ := aws.InstanceState(); state != "stopping" {
			t.Errorf("instance %s", state)
		}
		for _, e := range readEvents(t, events) {
			if (e.Type == "stop_warning" || e.Type == "stop") && e.Time.Before(until) {
				t.Errorf("%s at %v, while the start hold lasted (until %v)", e.Type, e.Time, until)
			}
		}
		log := stop()
		if !strings.Contains(log, "start hold: the machine stays up") || strings.Contains(log, "level=WARN msg=\"ignoring the start hold") {
			t.Errorf("agent log:\n%s", log)
		}
		if n := len(aws.Calls("imds", "GET /latest/meta-data/tags/instance/"+hold.StartHoldTag)); n < 1 || n > 4 {
			t.Errorf("%d reads of the tag in about 8 s, want one at start and one every 30 s", n)
		}
	})

	t.Run("capped", func(t *testing.T) {
		aws := awstest.New(t)
		aws.Env(t)
		aws.SetInstanceMetadataTags(true)
		aws.SetInstanceTag(hold.StartHoldTag, "2099-01-01T00:00:00Z", false)
		// start_hold_max after boot is 4 s from now.
		limit := time.Now().Add(4 * time.Second)
		events, _, _, stop := startHoldAgent(t, uptime(t)+4*time.Second)
		stoppedAt := waitStop(t, aws, 12*time.Second, events)
		if stoppedAt.Before(limit.Add(-100 * time.Millisecond)) {
			t.Errorf("stopped at %v, before start_hold_max after boot (%v)", stoppedAt, limit)
		}
		if log := stop(); !strings.Contains(log, "more than start_hold_max after boot") {
			t.Errorf("no warning about the capped tag; agent log:\n%s", log)
		}
	})

	t.Run("tags not enabled", func(t *testing.T) {
		aws := awstest.New(t)
		aws.Env(t)
		aws.SetInstanceTag(hold.StartHoldTag, "2099-01-01T00:00:00Z", false) // not served
		events, _, _, stop := startHoldAgent(t, up+time.Hour)
		waitStop(t, aws, 10*time.Second, events)
		log := stop()
		want := "aws ec2 modify-instance-metadata-options --instance-id " + aws.InstanceID + " --instance-metadata-tags enabled"
		if n := strings.Count(log, want); n != 1 {
			t.Errorf("%d warnings saying how to enable tags, want 1; agent log:\n%s", n, log)
		}
	})
}
