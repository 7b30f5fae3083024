package tunnel

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the state of tunnels to Prometheus:
// connwatch_tunnel_up, connwatch_tunnel_reconnects_total,
// connwatch_tunnel_handovers_total, connwatch_tunnel_keepalive_rtt_seconds (0 until a keepalive is
// answered) and connwatch_tunnel_forward_up, each labelled by host (and
// forward). It reads Status at every scrape.
type Collector struct {
	tunnels                                   []*Tunnel
	up, reconnects, handovers, rtt, forwardUp *prometheus.Desc
}

// NewCollector returns a Collector of tunnels.
func NewCollector(tunnels []*Tunnel) *Collector {
	return &Collector{
		tunnels:    tunnels,
		up:         prometheus.NewDesc("connwatch_tunnel_up", "1 while the tunnel's SSH connection is up.", []string{"host"}, nil),
		reconnects: prometheus.NewDesc("connwatch_tunnel_reconnects_total", "Times the tunnel's connection came back after being lost.", []string{"host"}, nil),
		handovers:  prometheus.NewDesc("connwatch_tunnel_handovers_total", "Times a standby connection took over from one whose keepalive replies were late.", []string{"host"}, nil),
		rtt:        prometheus.NewDesc("connwatch_tunnel_keepalive_rtt_seconds", "Round trip of the last answered keepalive.", []string{"host"}, nil),
		forwardUp:  prometheus.NewDesc("connwatch_tunnel_forward_up", "1 while the forward is listening or carrying connections.", []string{"host", "forward"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.reconnects
	ch <- c.handovers
	ch <- c.rtt
	ch <- c.forwardUp
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.tunnels {
		st := t.Status()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(st.State == StateUp), st.Host)
		ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(st.Reconnects), st.Host)
		ch <- prometheus.MustNewConstMetric(c.handovers, prometheus.CounterValue, float64(st.Handovers), st.Host)
		ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, st.KeepaliveRTT.Seconds(), st.Host)
		for _, f := range st.Forwards {
			ok := f.State == StateUp || f.State == StateListening
			ch <- prometheus.MustNewConstMetric(c.forwardUp, prometheus.GaugeValue, boolValue(ok), st.Host, f.Forward.String())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
