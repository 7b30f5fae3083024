package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/promtest"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// The Grafana dashboard and Prometheus rules shipped in contrib/.
const (
	dashboardFile = "../../contrib/grafana/connwatch.json"
	rulesFile     = "../../contrib/prometheus/connwatch.rules.yml"
	rulesTestFile = "../../contrib/prometheus/connwatch.rules.test.yml"
)

// dashboard is what the tests read of a Grafana dashboard.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// The data source variable every panel and query variable uses.
const dashboardDatasource = "${datasource}"

// grafanaVarRE finds the variables Grafana substitutes in a query:
// $name, ${name} and ${name:format}.
var grafanaVarRE = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// grafanaBuiltins are Grafana's own variables the dashboard may use.
var grafanaBuiltins = []string{"__rate_interval", "__interval", "__range"}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// queryVariables returns the dashboard's query variables as
// label_values(selector, label) pairs, by name.
func (d dashboard) queryVariables(t *testing.T) map[string][2]string {
	t.Helper()
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	out := map[string][2]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		out[v.Name] = [2]string{m[1], m[2]}
	}
	return out
}

// TestDashboardJSON checks the dashboard as Grafana would import it: it
// parses, has a Prometheus data source variable that every panel and
// variable uses, job and instance variables, queries in every panel,
// unique ids, panels that fit the 24-column grid without overlapping,
// and no variable that is not defined.
func TestDashboardJSON(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and a schema of Grafana 9.4 or later", d.UID, d.Title, d.SchemaVersion)
	}
	vars := slices.Clone(grafanaBuiltins)
	var dsVar bool
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
		switch v.Type {
		case "datasource":
			var q string
			json.Unmarshal(v.Query, &q)
			dsVar = dsVar || ("${"+v.Name+"}" == dashboardDatasource && q == "prometheus")
		case "query":
			if v.Datasource == nil || v.Datasource.UID != dashboardDatasource {
				t.Errorf("variable %s: data source %+v, want %s", v.Name, v.Datasource, dashboardDatasource)
			}
		}
	}
	if !dsVar {
		t.Errorf("no Prometheus data source variable for %s", dashboardDatasource)
	}
	qv := d.queryVariables(t)
	for _, name := range []string{"job", "instance"} {
		if _, ok := qv[name]; !ok {
			t.Errorf("no query variable %s", name)
		}
	}

	ids := map[int]string{}
	var placed []panel
	for _, p := range d.Panels {
		what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] != "" {
			t.Errorf("%s: id not positive or already used by %q", what, ids[p.ID])
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", what, g)
		}
		for _, o := range placed {
			h := o.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("%s overlaps panel %d %q: %+v, %+v", what, o.ID, o.Title, g, h)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dashboardDatasource {
			t.Errorf("%s: data source %+v, want prometheus %s, and a title", what, p.Datasource, dashboardDatasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", what)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" || refs[q.RefID] {
				t.Errorf("%s: query %q with refId %q: want an expression and a refId of its own", what, q.Expr, q.RefID)
			}
			refs[q.RefID] = true
			if q.Datasource != nil && *q.Datasource != *p.Datasource {
				t.Errorf("%s: query %s uses data source %+v, the panel %+v", what, q.RefID, q.Datasource, p.Datasource)
			}
			for _, m := range grafanaVarRE.FindAllStringSubmatch(q.Expr, -1) {
				if name := m[1] + m[2]; !slices.Contains(vars, name) {
					t.Errorf("%s: query %s uses $%s, which is not defined", what, q.RefID, name)
				}
			}
		}
	}
}

// TestAlertRules checks the alert rules with promtool and runs their unit
// tests, in which every alert fires and also stays quiet.
func TestAlertRules(t *testing.T) {
	promtool := testproc.RequireBinary(t, "promtest", "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Grafana's variables as the live test substitutes them: Prometheus
// scrapes every second, so $__rate_interval is 4 scrapes, as Grafana
// makes it; $__range is longer than all the data.
var liveVariables = map[string]string{"__rate_interval": "4s", "__interval": "1s", "__range": "1h", "job": "connwatch"}

// substitute replaces Grafana's variables in expr by vars.
func substitute(expr string, vars map[string]string) string {
	return grafanaVarRE.ReplaceAllStringFunc(expr, func(s string) string {
		m := grafanaVarRE.FindStringSubmatch(s)
		if v, ok := vars[m[1]+m[2]]; ok {
			return v
		}
		return s
	})
}

// Bounds of TestDashboardLive's waits; a run takes about 10 s.
const (
	liveAgentTimeout = 10 * time.Second // sessions seen, the webhook delivered
	liveDataTimeout  = 30 * time.Second // Prometheus up and every panel with data
)

// TestDashboardLive runs the real agent with a live SSH session, a login
// parked at the password prompt, a declared tunnel and a webhook, and a
// real Prometheus that scrapes it and loads the alert rules. Every panel
// query of the dashboard, its variables substituted, must parse and
// return data; the variables' label_values must list the agent; the
// rules must load and evaluate without error, the stop countdown (the
// test user's sessions are ignored, so the machine is idle) must show in
// the panel and make ConnwatchStopImminent pending, and no other alert
// may be active. Every connwatch_ metric the agent exports is on the
// dashboard.
func TestDashboardLive(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	prom := sshdtest.RequireBinary(t, "prometheus")
	began := time.Now()
	d := readDashboard(t)
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}

	srv := sshdtest.Start(t, sshdtest.Options{})
	var delivered atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	defer hook.Close()
	dir := t.TempDir()
	cfg := brokerTunnel(t, srv, dir, "LocalForward "+promtest.FreeAddr(t)+" "+hook.Listener.Addr().String())
	metrics := promtest.FreeAddr(t)
	agentStarted := time.Now()
	ag := startAgent(t, srv, "--config", cfg, "--metrics-addr", metrics, "--webhook", hook.URL,
		"--period", "1s", "--idle-after", "5m", "--warn-before", "1m", "--ignore-user", srv.User)
	held := srv.SSH(t, nil)
	held.WaitLocalPort(t, 10*time.Second)
	srv.ParkAtPassword(t, srv.User)
	ag.events.waitFor(t, "the session's start", liveAgentTimeout, func(as []arrival) bool { return count(as, "session_start") >= 1 })
	for deadline := time.Now().Add(liveAgentTimeout); delivered.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the webhook got nothing within %v", liveAgentTimeout)
		}
	}

	p := promtest.StartScrape(t, prom, metrics, promtest.Scrape{RuleFiles: []string{rules}})
	vars := maps.Clone(liveVariables)
	// A selected instance as Grafana writes it into a regular
	// expression: escaped, and the escapes escaped in the PromQL string.
	vars["instance"] = strings.ReplaceAll(regexp.QuoteMeta(metrics), `\`, `\\`)
	type query struct{ panel, ref, expr string }
	var queries []query
	for _, pn := range d.Panels {
		for _, q := range pn.Targets {
			queries = append(queries, query{fmt.Sprintf("%d %q", pn.ID, pn.Title), q.RefID, substitute(q.Expr, vars)})
		}
	}
	// Every panel has data once Prometheus has scraped a few times: rates
	// need two samples, the keepalive round trip a first answer.
	var empty []string
	for deadline := time.Now().Add(liveDataTimeout); ; time.Sleep(250 * time.Millisecond) {
		empty = empty[:0]
		for _, q := range queries {
			res, err := p.Query(q.expr)
			switch {
			case err != nil && (strings.Contains(err.Error(), ": 400 ") || strings.Contains(err.Error(), ": 422 ")):
				t.Fatalf("panel %s query %s fails: %s\n%v", q.panel, q.ref, q.expr, err)
			case err != nil || len(res) == 0:
				empty = append(empty, fmt.Sprintf("panel %s query %s: %s (%v)", q.panel, q.ref, q.expr, err))
			}
		}
		if len(empty) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, panels without data:\n%s\nprometheus log:\n%s", liveDataTimeout, strings.Join(empty, "\n"), p.Log())
		}
	}
	exported := agentMetrics(t, metrics) // sinks and tunnels included by now

	// What the panels show is what the test set up. The machine is idle
	// since the agent started: the stop is due 5 minutes (and at most a
	// period) after that.
	left := 300 - time.Since(agentStarted).Seconds()
	for expr, ok := range map[string]func(float64) bool{
		`sum(connwatch_pending_auth{kind="ssh"})`:                       func(v float64) bool { return v == 1 },
		`sum(connwatch_sessions{kind="ssh"})`:                           func(v float64) bool { return v >= 2 }, // held, and the tunnel's own
		`connwatch_tunnel_up{host="broker"}`:                            func(v float64) bool { return v == 1 },
		`connwatch_stop_deadline_timestamp_seconds - time()`:            func(v float64) bool { return v > left-1 && v <= 301 },
		`connwatch_blind`:                                               func(v float64) bool { return v == 0 },
		`connwatch_sink_last_success_timestamp_seconds{sink="webhook"}`: func(v float64) bool { return v > 0 },
	} {
		res, err := p.Query(expr)
		if err != nil || len(res) != 1 {
			t.Errorf("%s: %v %v, want one series", expr, res, err)
			continue
		}
		if v, err := strconv.ParseFloat(res[0].Value, 64); err != nil || !ok(v) {
			t.Errorf("%s = %s", expr, res[0].Value)
		}
	}
	for name, lv := range d.queryVariables(t) {
		want := map[string]string{"job": "connwatch", "instance": metrics}[name]
		got, err := p.LabelValues(lv[1], substitute(lv[0], vars))
		if err != nil || !slices.Contains(got, want) {
			t.Errorf("variable %s: label_values(%s, %s) = %q %v, want %s among them", name, lv[0], lv[1], got, err, want)
		}
	}

	// The rules loaded, evaluate cleanly, and only the countdown alerts.
	wantState := map[string]string{
		"ConnwatchAgentDown": "inactive", "ConnwatchAgentBlind": "inactive", "ConnwatchStopFailed": "inactive",
		"ConnwatchSinkStuck": "inactive", "ConnwatchSourceStale": "inactive", "ConnwatchStopImminent": "pending",
		"ConnwatchTunnelDown": "inactive",
	}
	var loaded []promtest.Rule
	for deadline := time.Now().Add(liveDataTimeout); ; time.Sleep(250 * time.Millisecond) {
		loaded, err = p.Rules()
		done := err == nil && len(loaded) > 0
		for _, r := range loaded {
			done = done && r.Health != "unknown" && r.State == wantState[r.Name]
		}
		if done || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range loaded {
		got[r.Name] = r.State
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: health %s, error %q", r.Name, r.Health, r.LastError)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(wantState) {
		t.Errorf("alert states %v, want %v", got, wantState)
	}

	// Nothing the agent exports is missing from the dashboard.
	var all strings.Builder
	for _, q := range queries {
		all.WriteString(q.expr + "\n")
	}
	for _, name := range exported {
		if !regexp.MustCompile(`\b` + name + `(_bucket)?\b`).MatchString(all.String()) {
			t.Errorf("the agent exports %s, and no panel shows it", name)
		}
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stop prometheus: %v", err)
	}
	t.Logf("%d panel queries and %d rules checked in %v", len(queries), len(loaded), time.Since(began).Round(time.Millisecond))
}

// agentMetrics lists the connwatch_ metric families the agent at addr
// exports.
func agentMetrics(t *testing.T, addr string) []string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (connwatch_\w+) `).FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("the agent exports no connwatch_ metrics:\n%s", b)
	}
	return names
}
