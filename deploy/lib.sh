# Shared by deploy/*/build.sh and deploy/tools.sh: where binaries are cached, the Go toolchain,
# Kubernetes' version stamp, and a build that reports progress. Source it after `set -euo
# pipefail` and after defining `fail MESSAGE`.
#
# Cache: ${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/fraudstack}/bin/<name>-<version>

bin_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}/bin"

# The go command: on PATH, else the official install's place. Call as go_bin="$(go_toolchain)".
go_toolchain() {
  local go_bin
  go_bin="$(command -v go || true)"
  [[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
  [[ -x "$go_bin" ]] || fail "no Go toolchain found (looked on PATH and /usr/local/go/bin)"
  echo "$go_bin"
}

# -ldflags for a Kubernetes command at VERSION (vX.Y.Z), stamped as Kubernetes' release build
# does, so `--version` and the API's /version report it.
kube_ldflags() {
  local version="$1" major minor pkg flags="-s -w"
  minor="${version#v}"; major="${minor%%.*}"; minor="${minor#*.}"; minor="${minor%%.*}"
  local build_date
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  echo "$flags"
}

# go build PACKAGE (in the module at DIR) into TARGET, appending to LOG; a line every 30 s while
# it compiles. It writes TARGET.partial first, so an interrupted build never looks finished.
go_build_reporting() { # what dir package ldflags target log [build-tags]
  local what="$1" dir="$2" package="$3" ldflags="$4" target="$5" log="$6" tags="${7:-}" go_bin
  go_bin="$(go_toolchain)"
  echo "building $what into $(dirname "$target") (first time only; log: $log)" >&2
  local start now last pid
  start=$(date +%s)
  (cd "$dir" && CGO_ENABLED=0 "$go_bin" build -trimpath -tags "$tags" -ldflags "$ldflags" \
    -o "$target.partial" \
    "$package") >>"$log" 2>&1 &
  pid=$!
  last=$start
  # Poll often (so we return as soon as it is done), report every 30 s.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    if (( now - last >= 30 )) && kill -0 "$pid" 2>/dev/null; then
      echo "  ... still compiling $what ($(( now - start ))s)" >&2
      last=$now
    fi
  done
  wait "$pid" || fail "go build of $what exited non-zero; last lines of $log: $(tail -n 3 "$log" | tr '\n' ' ')"
  mv "$target.partial" "$target"
  echo "built $target in $(( $(date +%s) - start ))s" >&2
}

# go install MODULE@VERSION (command NAME) into TARGET through a staging folder, logging to LOG.
go_install_into() { # name module version ldflags target log
  local name="$1" module="$2" version="$3" ldflags="$4" target="$5" log="$6" go_bin staging start
  go_bin="$(go_toolchain)"
  staging="$(mktemp -d "$bin_dir/.install-$name.XXXXXX")"
  echo "installing $name $version (go install $module@$version; log: $log)" >&2
  start=$(date +%s)
  GOBIN="$staging" CGO_ENABLED=0 "$go_bin" install -trimpath -ldflags "$ldflags" \
    "$module@$version" >"$log" 2>&1 \
    || { rm -rf "$staging"; fail "$name: $(tail -n 3 "$log" | tr '\n' ' ')"; }
  mv "$staging/$name" "$target"
  rm -rf "$staging"
  echo "installed $name $version in $(( $(date +%s) - start ))s" >&2
}
