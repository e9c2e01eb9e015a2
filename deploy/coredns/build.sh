#!/usr/bin/env bash
# Build CoreDNS from the Go module proxy into the fraudstack cache, once.
# The cluster of `fraudstack devstack up --cluster` runs it as its DNS
# (a Deployment in kube-system, from an image holding this binary).
# Prints the binary's path on the last line of stdout.
#
#   deploy/coredns/build.sh          # build if missing, print path
#
# About 4-5 minutes on 2 cores the first time; later runs return at once.
set -euo pipefail

COREDNS_VERSION="v1.12.4"
fail() { echo "coredns build failed: $*" >&2; exit 1; }
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"
target="$bin_dir/coredns-$COREDNS_VERSION"

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$bin_dir"
go_install_into coredns github.com/coredns/coredns "$COREDNS_VERSION" "-s -w" "$target" \
  "$bin_dir/coredns-$COREDNS_VERSION.build.log"
echo "$target"
