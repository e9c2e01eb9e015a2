//go:build tools

// Package tools pins the commands build.sh compiles (the operator, its config
// reloader and Prometheus), so `go mod tidy` keeps every module they need in
// go.mod and go.sum.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
