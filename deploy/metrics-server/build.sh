#!/usr/bin/env bash
# Build metrics-server from the Go module proxy into the fraudstack cache, once.
# The devstack cluster runs it as an add-on (a Deployment in kube-system behind
# the v1beta1.metrics.k8s.io APIService), so a HorizontalPodAutoscaler on CPU
# and `kubectl top` work as they do on a cluster that has it installed.
# Prints the binary's path on the last line of stdout.
#
#   deploy/metrics-server/build.sh     # build if missing, print path
#
# About 4-5 minutes on 2 cores the first time; later runs return at once.
set -euo pipefail

METRICS_SERVER_VERSION="v0.8.0"
fail() { echo "metrics-server build failed: $*" >&2; exit 1; }
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"
target="$bin_dir/metrics-server-$METRICS_SERVER_VERSION"

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$bin_dir"
version_flags="-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
go_install_into metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server \
  "$METRICS_SERVER_VERSION" "-s -w $version_flags" "$target" \
  "$bin_dir/metrics-server-$METRICS_SERVER_VERSION.build.log"
echo "$target"
