package pgsessionotel_test

import (
	"log"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/pgsessionotel"
)

func ExampleRegister() {
	var store *pgsession.Store // from pgsession.New

	// Without WithMeterProvider, Register uses otel.GetMeterProvider().
	provider := sdkmetric.NewMeterProvider( /* sdkmetric.WithReader(your exporter's reader) */ )
	reg, err := pgsessionotel.Register(store,
		pgsessionotel.WithMeterProvider(provider),
		pgsessionotel.WithAttributes(attribute.String("pgsession.store", "main")))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()
}
