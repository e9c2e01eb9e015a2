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

fail() { echo "tools install failed: $*" >&2; exit 1; }
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
mkdir -p "$bin_dir"

install_tool() { # name module version [extra ldflags]
  local name="$1" module="$2" version="$3" ldflags="-s -w ${4:-}"
  local target="$bin_dir/$name-$version"
  if [[ ! -x "$target" ]]; then
    go_install_into "$name" "$module" "$version" "$ldflags" "$target" \
      "$bin_dir/$name-$version.install.log"
  fi
  ln -sfn "$name-$version" "$bin_dir/$name"
}

# helm's release Makefile stamps its version and the Kubernetes version that `helm template`
# and `helm lint` assume (the minor of the client-go it is built with); `go install` alone
# leaves "v3.19" and Kubernetes v1.20, which a chart's kubeVersion constraint then refuses.
helm_ldflags() {
  local go_bin gomod minor
  go_bin="$(go_toolchain)"
  gomod="$("$go_bin" mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  minor="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n 1)"
  [[ -n "$minor" ]] || fail "cannot read helm's client-go version from $gomod"
  local flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$flags"
}

if [[ -x "$bin_dir/helm-$HELM_VERSION" ]]; then
  install_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
else
  install_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$(helm_ldflags)"
fi
install_tool vegeta github.com/tsenart/vegeta/v12 "$VEGETA_VERSION" "-X main.Version=$VEGETA_VERSION"
echo "$bin_dir"
