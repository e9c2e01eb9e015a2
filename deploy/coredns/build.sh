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
cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
bin_dir="$cache_dir/bin"
target="$bin_dir/coredns-$COREDNS_VERSION"

fail() { echo "coredns build failed: $*" >&2; exit 1; }

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || fail "no Go toolchain found (looked on PATH and /usr/local/go/bin)"

mkdir -p "$bin_dir"
log="$bin_dir/coredns-$COREDNS_VERSION.build.log"
staging="$(mktemp -d "$bin_dir/.install-coredns.XXXXXX")"
echo "building coredns $COREDNS_VERSION (go install; log: $log)" >&2
start=$(date +%s)
GOBIN="$staging" CGO_ENABLED=0 "$go_bin" install -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@$COREDNS_VERSION" >"$log" 2>&1 \
  || { rm -rf "$staging"; fail "$(tail -n 3 "$log" | tr '\n' ' ')"; }
mv "$staging/coredns" "$target"
rm -rf "$staging"
echo "built $target in $(( $(date +%s) - start ))s" >&2
echo "$target"
