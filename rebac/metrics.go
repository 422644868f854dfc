package rebac

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the check API's decisions, per tenant (its slug), per
// endpoint (check, check_bulk, lookup_resources) and outcome (allowed,
// denied, or unavailable when SpiceDB could not answer), and times the
// endpoints.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// NewMetrics returns the check API's metrics, registered with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Name: "permission_decisions_total",
			Help: "Check-API decisions by tenant, endpoint and outcome (allowed, denied, unavailable); a bulk check counts each item.",
		}, []string{"tenant", "endpoint", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gatehouse", Name: "permission_request_duration_seconds",
			Help:    "Time the check API took to answer, by endpoint, from decoding the request to the answer.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.decisions, m.latency)
	return m
}

// decided counts the answers of one request.
func (m *Metrics) decided(tenant, endpoint string, allowed []bool) {
	var yes, no int
	for _, ok := range allowed {
		if ok {
			yes++
		} else {
			no++
		}
	}
	if yes > 0 {
		m.decisions.WithLabelValues(tenant, endpoint, "allowed").Add(float64(yes))
	}
	if no > 0 {
		m.decisions.WithLabelValues(tenant, endpoint, "denied").Add(float64(no))
	}
}

// unavailable counts a request SpiceDB could not answer (denied, 503).
func (m *Metrics) unavailable(tenant, endpoint string, items int) {
	m.decisions.WithLabelValues(tenant, endpoint, "unavailable").Add(float64(items))
}

func (m *Metrics) took(endpoint string, since time.Time) {
	m.latency.WithLabelValues(endpoint).Observe(time.Since(since).Seconds())
}
