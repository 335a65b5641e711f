package pgsessionprom_test

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/pgsessionprom"
)

func ExampleNewCollector() {
	var store *pgsession.Store // from pgsession.New

	// Constant labels tell the stores of one registry apart; nil for one store.
	reg := prometheus.NewRegistry()
	reg.MustRegister(pgsessionprom.NewCollector(store, prometheus.Labels{"store": "main"}))
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}
