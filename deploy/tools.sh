#!/usr/bin/env bash
# Install the Go command-line tools the Kubernetes bundle uses (helm, vegeta)
# into the fraudstack cache with `go install`, once. Idempotent: a tool whose
# versioned binary is already there is skipped.
#
#   deploy/tools.sh            # prints the bin folder on the last line
#
# Binaries: <cache>/bin/helm-<version>, <cache>/bin/vegeta-<version>, plus
# unversioned links helm and vegeta pointing at them.
set -euo pipefail

HELM_VERSION="v3.19.0"
VEGETA_VERSION="v12.13.0"

cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
bin_dir="$cache_dir/bin"
mkdir -p "$bin_dir"

fail() { echo "tools install failed: $*" >&2; exit 1; }

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go

install_tool() { # name module version
  local name="$1" module="$2" version="$3"
  local target="$bin_dir/$name-$version"
  if [[ ! -x "$target" ]]; then
    [[ -x "$go_bin" ]] || fail "no Go toolchain found (looked on PATH and /usr/local/go/bin)"
    local staging log
    staging="$(mktemp -d "$bin_dir/.install-$name.XXXXXX")"
    log="$bin_dir/$name-$version.install.log"
    echo "installing $name $version (go install $module@$version; log: $log)" >&2
    local start=$(date +%s)
    GOBIN="$staging" CGO_ENABLED=0 "$go_bin" install -trimpath -ldflags "-s -w" "$module@$version" >"$log" 2>&1 \
      || { rm -rf "$staging"; fail "$name: $(tail -n 3 "$log" | tr '\n' ' ')"; }
    mv "$staging/$name" "$target"
    rm -rf "$staging"
    echo "installed $name $version in $(( $(date +%s) - start ))s" >&2
  fi
  ln -sfn "$name-$version" "$bin_dir/$name"
}

install_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
install_tool vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION"
echo "$bin_dir"
