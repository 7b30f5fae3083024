// Package promsink is the agent's Prometheus endpoint: what the agent
// sees (sessions, pending logins, the idle countdown, holds, blindness)
// and how its own parts are doing (each source's scans, each sink's
// deliveries), on its own registry, served over HTTP.
//
// The agent calls the Observe methods after every scan and policy step;
// sinks call ObserveSink after every delivery. All methods are safe for
// concurrent use, including with scrapes.
//
// Series that describe the current view (connwatch_sessions,
// connwatch_pending_auth, connwatch_holds) are built from the latest
// observation at scrape time, so a scrape never sees half of an update
// and series of users or hold kinds that went away disappear. The
// known combinations (ssh × tty/notty/forward/sftp, each watched VPN
// kind with an empty mode; the policy's hold kinds) are always exported,
// as 0 when nothing is there, so graphs have no gaps.
//
// connwatch_stop_deadline_timestamp_seconds is always present: it is 0
// when no stop is scheduled (busy, blind, or the stop already ran).
// Alert on it with a guard, e.g.
//
//	connwatch_stop_deadline_timestamp_seconds > 0
//	  and connwatch_stop_deadline_timestamp_seconds - time() < 300
//
// connwatch_build_info{version,revision,goversion} says which build runs.
// /healthz answers 200 while the agent's main loop turns (ObserveLoop
// within three loop intervals) and 503 with the reason when it does not.
package promsink

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/version"
)

// Options configure Metrics.
type Options struct {
	// PerUserLabels adds a user label to connwatch_sessions. Off by
	// default: every user multiplies the number of series. Only
	// authenticated sessions carry users (local accounts), never pending
	// logins, whose user names come from whoever knocks.
	PerUserLabels bool
	// Clock is used for the *_last_success_timestamp_seconds series.
	// Default: the system clock.
	Clock clock.Clock
	// Kinds are the session kinds the agent watches, always exported (as
	// 0 when nobody is connected). Default: ssh.
	Kinds []session.Kind
	// LoopInterval is how often the agent's main loop runs at least (its
	// scan interval): /healthz fails after three without an iteration.
	// Default DefaultLoopInterval.
	LoopInterval time.Duration
	// Build is exported as connwatch_build_info. Default: version.Get().
	Build *version.Info
}

// Label values used when a session or event does not say.
const unknown = "unknown"

// Results of connwatch_stop_actions_total.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// knownModes of SSH sessions are always exported, as 0 when nothing is
// there; VPN sessions have no mode.
var (
	knownModes = []session.Mode{session.ModeTTY, session.ModeNoTTY, session.ModeForward, session.ModeSFTP}
	// knownHoldKinds are the kinds the policy, the agent and package hold
	// produce.
	knownHoldKinds = policy.HoldKinds
)

// Buckets of the duration histograms, in seconds. A scan of /proc takes
// milliseconds; a delivery may go over the network.
var (
	scanBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	sinkBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// Metrics holds the agent's metrics and their registry.
type Metrics struct {
	reg    *prometheus.Registry
	clock  clock.Clock
	view   *viewCollector
	health health

	sessionStarts *prometheus.CounterVec
	sessionEnds   *prometheus.CounterVec
	idle          prometheus.Gauge
	stopDeadline  prometheus.Gauge
	blind         prometheus.Gauge
	stopActions   *prometheus.CounterVec

	scanDuration    *prometheus.HistogramVec
	scanErrors      *prometheus.CounterVec
	scanLastSuccess *prometheus.GaugeVec

	sinkDuration    *prometheus.HistogramVec
	sinkErrors      *prometheus.CounterVec
	sinkLastSuccess *prometheus.GaugeVec
	sinkPending     *prometheus.GaugeVec
}

// New returns Metrics on a registry of their own, which also carries the
// Go runtime and process collectors.
func New(o Options) *Metrics {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = []session.Kind{session.KindSSH}
	}
	if o.LoopInterval <= 0 {
		o.LoopInterval = DefaultLoopInterval
	}
	build := o.Build
	if build == nil {
		in := version.Get()
		build = &in
	}
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		clock:  o.Clock,
		view:   newViewCollector(o.PerUserLabels, kinds),
		health: health{interval: o.LoopInterval},
		sessionStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connwatch_session_starts_total",
			Help: "Sessions that began (session_start events), by kind.",
		}, []string{"kind"}),
		sessionEnds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connwatch_session_ends_total",
			Help: "Sessions that ended (session_end events), by kind.",
		}, []string{"kind"}),
		idle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connwatch_idle_seconds",
			Help: "Seconds since the machine became idle (no counted session and no hold); 0 while busy.",
		}),
		stopDeadline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connwatch_stop_deadline_timestamp_seconds",
			Help: "Unix time at which the idle policy will stop the machine; 0 when no stop is scheduled.",
		}),
		blind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connwatch_blind",
			Help: "1 when the agent cannot tell who is connected (and so will not stop the machine), else 0.",
		}),
		stopActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connwatch_stop_actions_total",
			Help: "Stop actions run (stop and stop_failed events), by result (ok, error).",
		}, []string{"result"}),
		scanDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "connwatch_source_scan_duration_seconds",
			Help:    "How long one scan of a session source took, failed scans included.",
			Buckets: scanBuckets,
		}, []string{"source"}),
		scanErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connwatch_source_errors_total",
			Help: "Scans of a session source that failed.",
		}, []string{"source"}),
		scanLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connwatch_source_last_success_timestamp_seconds",
			Help: "Unix time of the last successful scan of a session source; 0 before the first.",
		}, []string{"source"}),
		sinkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "connwatch_sink_delivery_duration_seconds",
			Help:    "How long one delivery to a sink took, failed deliveries included.",
			Buckets: sinkBuckets,
		}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connwatch_sink_errors_total",
			Help: "Deliveries to a sink that failed.",
		}, []string{"sink"}),
		sinkLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connwatch_sink_last_success_timestamp_seconds",
			Help: "Unix time of the last successful delivery to a sink; 0 before the first.",
		}, []string{"sink"}),
		sinkPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connwatch_sink_pending",
			Help: "Events waiting in a sink's outbox for delivery.",
		}, []string{"sink"}),
	}
	for _, k := range kinds {
		m.sessionStarts.WithLabelValues(string(k))
		m.sessionEnds.WithLabelValues(string(k))
	}
	m.stopActions.WithLabelValues(ResultOK)
	m.stopActions.WithLabelValues(ResultError)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "connwatch_build_info",
		Help:        "Always 1; the labels say which build of connwatch is running.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.view,
		m.sessionStarts, m.sessionEnds, m.idle, m.stopDeadline, m.blind, m.stopActions,
		m.scanDuration, m.scanErrors, m.scanLastSuccess,
		m.sinkDuration, m.sinkErrors, m.sinkLastSuccess, m.sinkPending,
	)
	return m
}

// Registerer is the registry behind Handler, for other parts of the
// agent (the tunnel supervisor) to add their own collectors.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Gatherer is the registry behind Handler.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// ObserveScan records one scan of source that took dur. snap is the
// agent's whole view of sessions (the latest successful snapshot
// replaces the previous one, whichever source it came from). When err is
// not nil the scan counts as failed and the session series keep their
// last known values: connwatch_blind says the view is not to be trusted.
func (m *Metrics) ObserveScan(source string, dur time.Duration, snap session.Snapshot, err error) {
	m.ObservePoll(source, dur, err)
	if err == nil {
		m.view.setSnapshot(snap)
	}
}

// ObservePoll records one poll of a polled source (a VPN) that took dur,
// under the same series as scans. The sessions it found are part of the
// next ObserveScan's snapshot.
func (m *Metrics) ObservePoll(source string, dur time.Duration, err error) {
	m.scanDuration.WithLabelValues(source).Observe(dur.Seconds())
	errs := m.scanErrors.WithLabelValues(source)
	last := m.scanLastSuccess.WithLabelValues(source)
	if err != nil {
		errs.Inc()
		return
	}
	last.Set(unixSeconds(m.clock.Now()))
}

// ObserveEvents counts session starts and ends and stop actions.
func (m *Metrics) ObserveEvents(evs []event.Event) {
	for _, e := range evs {
		switch e.Type {
		case event.SessionStart:
			m.sessionStarts.WithLabelValues(eventKind(e)).Inc()
		case event.SessionEnd:
			m.sessionEnds.WithLabelValues(eventKind(e)).Inc()
		case event.Stop:
			m.stopActions.WithLabelValues(ResultOK).Inc()
		case event.StopFailed:
			m.stopActions.WithLabelValues(ResultError).Inc()
		}
	}
}

// ObservePolicy records the idle policy's status at now.
func (m *Metrics) ObservePolicy(now time.Time, st policy.Status) {
	idle := 0.0
	if st.IdleSince != nil {
		idle = max(now.Sub(*st.IdleSince).Seconds(), 0)
	}
	m.idle.Set(idle)
	deadline := 0.0
	if st.StopDueAt != nil {
		deadline = unixSeconds(*st.StopDueAt)
	}
	m.stopDeadline.Set(deadline)
	blind := 0.0
	if st.Blind {
		blind = 1
	}
	m.blind.Set(blind)
	m.view.setHolds(st.Holds)
}

// ObserveSink records one delivery to sink that took dur, and how many
// events still wait in its outbox.
func (m *Metrics) ObserveSink(sink string, dur time.Duration, err error, pending int) {
	m.sinkDuration.WithLabelValues(sink).Observe(dur.Seconds())
	errs := m.sinkErrors.WithLabelValues(sink)
	last := m.sinkLastSuccess.WithLabelValues(sink)
	if err != nil {
		errs.Inc()
	} else {
		last.Set(unixSeconds(m.clock.Now()))
	}
	m.sinkPending.WithLabelValues(sink).Set(float64(pending))
}

func eventKind(e event.Event) string {
	if e.Session == nil || e.Session.Kind == "" {
		return unknown
	}
	return string(e.Session.Kind)
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// viewCollector exports the series that describe the current view. It
// keeps counts, not sessions, and reuses its maps: an observation does
// not allocate once the set of label values is stable.
type viewCollector struct {
	perUser     bool
	kinds       []session.Kind
	sessionDesc *prometheus.Desc
	pendingDesc *prometheus.Desc
	holdsDesc   *prometheus.Desc

	mu       sync.Mutex
	sessions map[sessionKey]int
	pending  map[session.Kind]int
	holds    map[string]int
}

type sessionKey struct {
	kind session.Kind
	mode session.Mode
	user string
}

func newViewCollector(perUser bool, kinds []session.Kind) *viewCollector {
	labels := []string{"kind", "mode"}
	help := "Sessions (authenticated connections) by kind and mode."
	if perUser {
		labels = append(labels, "user")
		help = "Sessions (authenticated connections) by kind, mode and user; the series with an empty user is always 0 and keeps every kind and mode present."
	}
	return &viewCollector{
		perUser:     perUser,
		kinds:       kinds,
		sessionDesc: prometheus.NewDesc("connwatch_sessions", help, labels, nil),
		pendingDesc: prometheus.NewDesc("connwatch_pending_auth",
			"Connections that have not (yet) authenticated, by kind: users at a password prompt, or bots.", []string{"kind"}, nil),
		holdsDesc: prometheus.NewDesc("connwatch_holds",
			"Reasons other than sessions that keep the machine up (inhibit locks, processes, load, boot grace, start hold), by kind.", []string{"kind"}, nil),
		sessions: map[sessionKey]int{},
		pending:  map[session.Kind]int{},
		holds:    map[string]int{},
	}
}

func (c *viewCollector) setSnapshot(snap session.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.sessions)
	for i := range snap.Sessions {
		s := &snap.Sessions[i]
		k := sessionKey{kind: s.Kind, mode: s.Mode}
		if k.kind == "" {
			k.kind = unknown
		}
		if k.mode == "" && !k.kind.IsVPN() {
			k.mode = unknown
		}
		if c.perUser {
			k.user = s.User
			if k.user == "" {
				k.user = unknown
			}
		}
		c.sessions[k]++
	}
	clear(c.pending)
	for i := range snap.PendingAuth {
		k := snap.PendingAuth[i].Kind
		if k == "" {
			k = unknown
		}
		c.pending[k]++
	}
}

func (c *viewCollector) setHolds(holds []policy.Hold) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.holds)
	for _, h := range holds {
		k := h.Kind
		if k == "" {
			k = unknown
		}
		c.holds[k]++
	}
}

// Describe implements prometheus.Collector.
func (c *viewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessionDesc
	ch <- c.pendingDesc
	ch <- c.holdsDesc
}

// Collect implements prometheus.Collector.
func (c *viewCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sessions := maps.Clone(c.sessions)
	pending := maps.Clone(c.pending)
	holds := maps.Clone(c.holds)
	c.mu.Unlock()

	// Known combinations first, as 0 when absent; with per-user labels
	// they carry user="" (which Prometheus stores as no user label).
	for _, k := range c.kinds {
		modes := knownModes
		if k.IsVPN() {
			modes = []session.Mode{""}
		}
		for _, mode := range modes {
			key := sessionKey{kind: k, mode: mode}
			n := 0
			if !c.perUser {
				n = sessions[key]
				delete(sessions, key)
			}
			ch <- prometheus.MustNewConstMetric(c.sessionDesc, prometheus.GaugeValue, float64(n), c.sessionLabels(key)...)
		}
		if !k.IsVPN() {
			ch <- prometheus.MustNewConstMetric(c.pendingDesc, prometheus.GaugeValue, float64(pending[k]), string(k))
			delete(pending, k)
		}
	}
	for _, key := range slices.SortedFunc(maps.Keys(sessions), compareSessionKeys) {
		ch <- prometheus.MustNewConstMetric(c.sessionDesc, prometheus.GaugeValue, float64(sessions[key]), c.sessionLabels(key)...)
	}
	for _, k := range slices.Sorted(maps.Keys(pending)) {
		ch <- prometheus.MustNewConstMetric(c.pendingDesc, prometheus.GaugeValue, float64(pending[k]), string(k))
	}
	for _, k := range knownHoldKinds {
		ch <- prometheus.MustNewConstMetric(c.holdsDesc, prometheus.GaugeValue, float64(holds[k]), k)
		delete(holds, k)
	}
	for _, k := range slices.Sorted(maps.Keys(holds)) {
		ch <- prometheus.MustNewConstMetric(c.holdsDesc, prometheus.GaugeValue, float64(holds[k]), k)
	}
}

func (c *viewCollector) sessionLabels(k sessionKey) []string {
	if c.perUser {
		return []string{string(k.kind), string(k.mode), k.user}
	}
	return []string{string(k.kind), string(k.mode)}
}

func compareSessionKeys(a, b sessionKey) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.mode, b.mode), cmp.Compare(a.user, b.user))
}
