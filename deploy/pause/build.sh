#!/usr/bin/env bash
# Build the pod sandbox's pause binary (static, no cgo) into the fraudstack
# cache, once. `fraudstack devstack up --cluster` puts it in a FROM scratch
# image in the local registry and containerd uses it as its sandbox image.
# Prints the binary's path on the last line of stdout.
set -euo pipefail

PAUSE_VERSION="3.10-fraudstack.1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
bin_dir="$cache_dir/bin"
target="$bin_dir/pause-$PAUSE_VERSION"

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || { echo "pause build failed: no Go toolchain found" >&2; exit 1; }

mkdir -p "$bin_dir"
(cd "$here" && CGO_ENABLED=0 "$go_bin" build -trimpath -ldflags "-s -w" -o "$target.partial" .)
mv "$target.partial" "$target"
echo "built $target" >&2
echo "$target"
