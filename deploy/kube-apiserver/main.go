// Command kube-apiserver is the upstream API server, unchanged, built from
// published modules so the local stack validates objects exactly as a
// cluster of the same version would.
package main

import (
	"os"
	_ "time/tzdata" // CronJob spec.timeZone is validated against the tz database

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // kubernetes_build_info
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
