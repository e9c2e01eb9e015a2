#!/usr/bin/env bash
# Build the real kube-apiserver from the Go module proxy into the fraudstack
# cache, once. Prints the binary's path on the last line of stdout.
#
#   deploy/kube-apiserver/build.sh          # build if missing, print path
#
# Cache: ${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/fraudstack}/bin
# The first build compiles most of Kubernetes: about 9.5 minutes on 2 cores
# with the modules already downloaded, a few more to fetch them; later runs
# return at once.
set -euo pipefail

KUBE_VERSION="v1.34.4" # must match k8s.io/kubernetes in go.mod
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
bin_dir="$cache_dir/bin"
target="$bin_dir/kube-apiserver-$KUBE_VERSION"

fail() { echo "kube-apiserver build failed: $*" >&2; exit 1; }

if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || fail "no Go toolchain found (looked on PATH and /usr/local/go/bin)"

mkdir -p "$bin_dir"
log="$bin_dir/kube-apiserver-$KUBE_VERSION.build.log"
minor="${KUBE_VERSION#v}"; major="${minor%%.*}"; minor="${minor#*.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "building kube-apiserver $KUBE_VERSION into $bin_dir (first time only; log: $log)" >&2
start=$(date +%s)
(
  cd "$here"
  # Write to a temporary name so an interrupted build never looks finished.
  CGO_ENABLED=0 "$go_bin" build -trimpath -ldflags "$ldflags" -o "$target.partial" .
) >"$log" 2>&1 &
build_pid=$!
# Poll often (so we return as soon as it is done), report every 30 s.
last_report=$start
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 2
  now=$(date +%s)
  if (( now - last_report >= 30 )) && kill -0 "$build_pid" 2>/dev/null; then
    echo "  ... still compiling ($(( now - start ))s)" >&2
    last_report=$now
  fi
done
wait "$build_pid" || fail "go build exited non-zero; last lines of $log: $(tail -n 3 "$log" | tr '\n' ' ')"
mv "$target.partial" "$target"
echo "built $target in $(( $(date +%s) - start ))s" >&2
echo "$target"
