#!/usr/bin/env bash
# Build the Prometheus Operator, its config reloader and the Prometheus it runs from the Go
# module proxy into the fraudstack cache, once. The devstack cluster runs them as its monitoring
# add-on, the part of kube-prometheus-stack that fraudstack's chart relies on (ServiceMonitor,
# PrometheusRule -> a Prometheus the operator configures).
#
# Prometheus is the version the operator's module requires (go.mod), the newest of the operator's
# compatibility matrix, built with Kubernetes service discovery only (the build tags
# remove_all_sd,enable_kubernetes_sd): the operator's ServiceMonitors become kubernetes_sd_configs,
# which Debian's prometheus package is built without. Its web UI is not embedded; the API is all
# there. Beside the binaries it keeps the operator's own manifests from the module (its CRDs and
# the ClusterRoles of the operator and of a Prometheus) in prometheus-operator-<version>.manifests/.
# Prints the bin folder on the last line of stdout.
#
#   deploy/prometheus-operator/build.sh   # build what is missing, print the folder
#
# Cache: ${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/fraudstack}/bin/<name>-<version>
# About 10 minutes for the three on 2 cores the first time; later runs return at once.
set -euo pipefail

OPERATOR_VERSION="v0.93.1"   # must match the require lines of go.mod
PROMETHEUS_VERSION="v3.13.1" # github.com/prometheus/prometheus v0.313.1 in go.mod
COMMANDS=(operator prometheus-config-reloader prometheus)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "prometheus-operator build failed: $*" >&2; exit 1; }
source "$here/../lib.sh"

# cmd/operator -> prometheus-operator-<version>, cmd/prometheus-config-reloader -> itself,
# Prometheus -> prometheus-<its version>
target() {
  case "$1" in
    prometheus) echo "$bin_dir/prometheus-$PROMETHEUS_VERSION" ;;
    *) echo "$bin_dir/prometheus-${1#prometheus-}-$OPERATOR_VERSION" ;;
  esac
}
manifests="$bin_dir/prometheus-operator-$OPERATOR_VERSION.manifests"
missing=()
for name in "${COMMANDS[@]}"; do
  [[ -x "$(target "$name")" ]] || missing+=("$name")
done
if (( ${#missing[@]} == 0 )) && [[ -d "$manifests" ]]; then
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$bin_dir"
log="$bin_dir/prometheus-operator-$OPERATOR_VERSION.build.log"
# what `--version` prints, as the projects' release builds stamp it
stamp() { # version
  echo "-s -w -X github.com/prometheus/common/version.Version=${1#v}" \
    "-X github.com/prometheus/common/version.Branch=release"
}
(( ${#missing[@]} == 0 )) || : >"$log"
for name in "${missing[@]}"; do
  case "$name" in
    prometheus)
      go_build_reporting "$(basename "$(target "$name")")" "$here" \
        github.com/prometheus/prometheus/cmd/prometheus "$(stamp "$PROMETHEUS_VERSION")" \
        "$(target "$name")" "$log" remove_all_sd,enable_kubernetes_sd ;;
    *)
      go_build_reporting "$(basename "$(target "$name")")" "$here" \
        "github.com/prometheus-operator/prometheus-operator/cmd/$name" \
        "$(stamp "$OPERATOR_VERSION")" "$(target "$name")" "$log" ;;
  esac
done
if [[ ! -d "$manifests" ]]; then
  module="$(cd "$here" && "$(go_toolchain)" list -m -f '{{.Dir}}' \
    github.com/prometheus-operator/prometheus-operator)"
  [[ -d "$module/example" ]] || fail "the module's example folder is missing in $module"
  rm -rf "$manifests.partial" && mkdir -p "$manifests.partial"
  cp "$module"/example/prometheus-operator-crd/*.yaml \
    "$module/example/rbac/prometheus-operator/prometheus-operator-cluster-role.yaml" \
    "$module/example/rbac/prometheus/prometheus-cluster-role.yaml" "$manifests.partial/"
  chmod 0644 "$manifests.partial"/*.yaml
  mv "$manifests.partial" "$manifests"
fi
echo "$bin_dir"
