package bgp

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	neighborUp *prometheus.GaugeVec
	routes     prometheus.Gauge
	filters    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		neighborUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rtbh_bgp_neighbor_up",
			Help: "1 when the BGP session to the neighbor is established, else 0.",
		}, []string{"neighbor"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtbh_bgp_routes_announced",
			Help: "Routes (blackholes) the BGP speaker announces.",
		}),
		filters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtbh_bgp_flowspec_filters_announced",
			Help: "FlowSpec filters the BGP speaker announces (to flowspec: true neighbors).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.neighborUp, err = register(reg, m.neighborUp)
	if err != nil {
		return nil, err
	}
	m.routes, err = register(reg, m.routes)
	if err != nil {
		return nil, err
	}
	m.filters, err = register(reg, m.filters)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name (a speaker re-created in the same process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(C); ok {
				return ex, nil
			}
		}
		return c, fmt.Errorf("registering bgp metrics: %w", err)
	}
	return c, nil
}
