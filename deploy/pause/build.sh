#!/usr/bin/env bash
# Build the pod sandbox's pause binary (static, no cgo) into the fraudstack
# cache, once. `fraudstack devstack up --cluster` puts it in a FROM scratch
# image in the local registry and containerd uses it as its sandbox image.
# Prints the binary's path on the last line of stdout.
set -euo pipefail

PAUSE_VERSION="3.10-fraudstack.1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "pause build failed: $*" >&2; exit 1; }
source "$here/../lib.sh"
target="$bin_dir/pause-$PAUSE_VERSION"

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$bin_dir"
go_build_reporting "pause $PAUSE_VERSION" "$here" . "-s -w" "$target" \
  "$bin_dir/pause-$PAUSE_VERSION.build.log"
echo "$target"
