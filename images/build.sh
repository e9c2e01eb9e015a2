#!/usr/bin/env bash
# Build every image the chart needs from package registries alone (Debian, PyPI, Maven Central):
# no image is pulled from a container registry. `make images` runs this.
#
#   images/build.sh                                   # every image
#   IMAGES="serve operator" images/build.sh           # some of them
#   REGISTRY=registry.example.com:5000/fraudstack images/build.sh   # and push them there
#
# Images (tags localhost/fraudstack-<name>:<version>):
#   serve ingest aggregate snapshot train operator   the Dockerfile's targets, version = pyproject's
#   redis        Debian's redis-server, tagged with its version
#   kafka        Apache Kafka (KRaft) from the Maven Central jars the devstack uses
#   prometheus   Debian's prometheus, tagged with its version
# and the base they start from: localhost/fraudstack-rootfs (debootstrap --variant=minbase),
# localhost/fraudstack-python and -python-dev (images/base/Containerfile), rebuilt only when
# their inputs change (the tag carries a hash of them).
#
# Settings (environment):
#   IMAGES          which images to build (default: all of the above)
#   REGISTRY        host[:port][/path] to push every built image to; a loopback registry
#                   (127.0.0.1, localhost, [::1]) is pushed to over plain HTTP
#   DEBIAN_MIRROR   Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   PIP_FROM_HOST   auto (default), 1 or 0: give pip inside the build the host's pip
#                   configuration (pip.conf, PIP_INDEX_URL, proxies) and CA bundle, mounted
#                   read-only, for networks behind a TLS-inspecting proxy. auto: when the host
#                   has a pip configuration; 1: always; 0: never.
#   HOST_CA_BUNDLE  the CA bundle given to pip (default: PIP_CERT, pip's `cert` setting, else
#                   /etc/ssl/certs/ca-certificates.crt)
# Logs: <cache>/images/logs/<image>.log; sizes and build times: <cache>/images/logs/sizes.tsv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

ROLES="serve ingest aggregate snapshot train operator"
THIRD_PARTY="redis kafka prometheus"
IMAGES="${IMAGES:-$ROLES $THIRD_PARTY}"
REGISTRY="${REGISTRY:-}"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP_FROM_HOST="${PIP_FROM_HOST:-auto}"

cache_dir="${FRAUDSTACK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudstack}"
work_dir="$cache_dir/images"
log_dir="$work_dir/logs"
mkdir -p "$log_dir"

fail() { echo "images: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }
short_hash() { sha256sum | cut -c1-12; }

for name in $IMAGES; do
  case " $ROLES $THIRD_PARTY " in *" $name "*) ;; *) fail "unknown image '$name' (one of: $ROLES $THIRD_PARTY)" ;; esac
done

# --- tools ------------------------------------------------------------------------------------
apt_updated=0
ensure_package() { # command package
  command -v "$1" >/dev/null && return 0
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null \
    || fail "$1 is missing: install the Debian package $2"
  say "installing $2 with apt (log: $log_dir/apt.log)"
  if [[ "$apt_updated" == 0 ]]; then
    apt-get update -q >>"$log_dir/apt.log" 2>&1 || fail "apt-get update failed (see $log_dir/apt.log)"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" \
    >>"$log_dir/apt.log" 2>&1 || fail "apt-get install $2 failed (see $log_dir/apt.log)"
}
ensure_package podman podman
ensure_package buildah buildah
ensure_package runc runc
ensure_package debootstrap debootstrap

# --- pip settings from the host (TLS-inspecting proxies) --------------------------------------
pip_build_args=()
host_pip_conf=""
for candidate in "${PIP_CONFIG_FILE:-}" /etc/pip.conf /etc/xdg/pip/pip.conf \
    "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  if [[ -n "$candidate" && -f "$candidate" ]]; then host_pip_conf="$candidate"; break; fi
done
use_host_pip=0
case "$PIP_FROM_HOST" in
  1) use_host_pip=1 ;;
  0) ;;
  auto) if [[ -n "$host_pip_conf" || -n "${PIP_CERT:-}${PIP_INDEX_URL:-}" ]]; then use_host_pip=1; fi ;;
  *) fail "PIP_FROM_HOST is auto, 0 or 1, not '$PIP_FROM_HOST'" ;;
esac
if [[ "$use_host_pip" == 1 ]]; then
  ca_bundle="${HOST_CA_BUNDLE:-${PIP_CERT:-}}"
  if [[ -z "$ca_bundle" && -n "$host_pip_conf" ]]; then
    ca_bundle="$(sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' "$host_pip_conf" | head -n1)"
  fi
  ca_bundle="${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}"
  [[ -f "$ca_bundle" ]] || fail "the CA bundle $ca_bundle is missing (set HOST_CA_BUNDLE)"
  # pip reads PIP_CERT before pip.conf's `cert`, which names a host path
  pip_build_args+=(-v "$(readlink -f "$ca_bundle"):/run/host-ca-bundle.crt:ro"
    --build-arg PIP_CERT=/run/host-ca-bundle.crt)
  if [[ -n "$host_pip_conf" ]]; then
    pip_build_args+=(-v "$(readlink -f "$host_pip_conf"):/etc/pip.conf:ro")
  fi
  for variable in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST \
      HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [[ -n "${!variable:-}" ]]; then pip_build_args+=(--build-arg "$variable=${!variable}"); fi
  done
  say "pip in the build uses the host's configuration${host_pip_conf:+ ($host_pip_conf)} and CA bundle $ca_bundle"
fi

# --- the base images --------------------------------------------------------------------------
sizes="$log_dir/sizes.tsv"
: >"$sizes"
built=()

image_mb() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%d", $1 / 1000000}'; }

record() { # name image seconds
  local mb
  mb="$(image_mb "$2")"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$mb" "$3" >>"$sizes"
  built+=("$2")
  say "$2: $mb MB in $3 s"
}

rootfs_tag="$DEBIAN_SUITE-$(printf 'minbase %s %s v2' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" | short_hash)"
rootfs_image="localhost/fraudstack-rootfs:$rootfs_tag"
base_tag="3.11-$DEBIAN_SUITE-$( (cat "$here/base/Containerfile"; echo "$rootfs_image") | short_hash)"
python_image="localhost/fraudstack-python:$base_tag"
builder_image="localhost/fraudstack-python-dev:$base_tag"

build_rootfs() {
  podman image exists "$rootfs_image" && return 0
  local start=$SECONDS target
  target="$(mktemp -d "$work_dir/rootfs.XXXXXX")"
  say "debootstrap --variant=minbase $DEBIAN_SUITE (log: $log_dir/debootstrap.log)"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$target" "$DEBIAN_MIRROR" \
    >"$log_dir/debootstrap.log" 2>&1 || { rm -rf "$target"; fail "debootstrap failed (see $log_dir/debootstrap.log)"; }
  # What apt downloaded, and the documentation, man pages and translations that the base image's
  # dpkg settings keep out of every later package (copyright files stay): 121 MB -> 78 MB.
  rm -rf "$target"/var/cache/apt/archives/*.deb "$target"/var/lib/apt/lists/*
  find "$target/usr/share/doc" -type f ! -name copyright -delete
  find "$target/usr/share/doc" -depth -mindepth 1 -type d -empty -delete
  rm -rf "$target"/usr/share/man/* "$target"/usr/share/locale/* "$target"/usr/share/info/*
  tar -C "$target" --numeric-owner -c . | podman import - "$rootfs_image" >>"$log_dir/debootstrap.log" 2>&1
  rm -rf "$target"
  record rootfs "$rootfs_image" $((SECONDS - start))
}

build_base() {
  podman image exists "$python_image" && podman image exists "$builder_image" && return 0
  build_rootfs
  local start=$SECONDS
  say "building $python_image (log: $log_dir/base-python.log)"
  podman build --network host --build-arg "ROOTFS_IMAGE=$rootfs_image" --target python \
    -t "$python_image" -f "$here/base/Containerfile" "$here/base" \
    >"$log_dir/base-python.log" 2>&1 || fail "base image failed (see $log_dir/base-python.log)"
  record python "$python_image" $((SECONDS - start))
  start=$SECONDS
  say "building $builder_image (log: $log_dir/base-python-dev.log)"
  podman build --network host --build-arg "ROOTFS_IMAGE=$rootfs_image" --target python-dev \
    -t "$builder_image" -f "$here/base/Containerfile" "$here/base" \
    >"$log_dir/base-python-dev.log" 2>&1 || fail "builder image failed (see $log_dir/base-python-dev.log)"
  record python-dev "$builder_image" $((SECONDS - start))
}

# --- fraudstack's images ----------------------------------------------------------------------
version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")"

build_role() { # role
  local role="$1" image="localhost/fraudstack-$1:$version" start=$SECONDS
  say "building $image (log: $log_dir/$role.log)"
  podman build --network host --target "$role" \
    --build-arg "PYTHON_IMAGE=$python_image" --build-arg "BUILDER_IMAGE=$builder_image" \
    ${pip_build_args[@]+"${pip_build_args[@]}"} \
    --label "org.opencontainers.image.title=fraudstack-$role" \
    --label "org.opencontainers.image.version=$version" \
    -t "$image" -f "$root/Dockerfile" "$root" \
    >"$log_dir/$role.log" 2>&1 || fail "$role failed (see $log_dir/$role.log)"
  record "$role" "$image" $((SECONDS - start))
}

# --- third-party images -----------------------------------------------------------------------
# Redis and Prometheus are tagged with the version Debian installed, which the image records.
build_debian_package_image() { # name
  local name="$1" start=$SECONDS staging="localhost/fraudstack-$1:build" package_version
  say "building fraudstack-$name (log: $log_dir/$name.log)"
  podman build --network host --build-arg "BASE_IMAGE=$python_image" \
    -t "$staging" -f "$here/$name/Containerfile" "$here/$name" \
    >"$log_dir/$name.log" 2>&1 || fail "$name failed (see $log_dir/$name.log)"
  package_version="$(podman run --rm --network none --entrypoint cat "$staging" /usr/share/fraudstack-image-version)"
  [[ -n "$package_version" ]] || fail "$name: the image records no version"
  podman tag "$staging" "localhost/fraudstack-$name:$package_version"
  podman untag "$staging" "$staging" 2>/dev/null || true
  record "$name" "localhost/fraudstack-$name:$package_version" $((SECONDS - start))
}

# The broker's jars: the devstack's own (services/fraudstack/devstack/kafka-pom.xml), resolved
# by Maven into the same cache folder the devstack uses.
kafka_version="$(sed -n 's/^KAFKA_VERSION = "\(.*\)"$/\1/p' "$root/services/fraudstack/devstack/kafka_server.py")"
kafka_jars() {
  local target="$cache_dir/kafka/$kafka_version"
  [[ -f "$target/.complete" ]] && return 0
  ensure_package mvn maven
  mkdir -p "$target"
  sed "s/@KAFKA_VERSION@/$kafka_version/" "$root/services/fraudstack/devstack/kafka-pom.xml" >"$target/pom.xml"
  say "resolving Kafka $kafka_version jars with Maven (log: $target/mvn.log)"
  rm -rf "$target/libs"
  mvn -q -B -f "$target/pom.xml" dependency:copy-dependencies \
    "-DoutputDirectory=$target/libs" -DincludeScope=runtime >"$target/mvn.log" 2>&1 \
    || fail "Maven could not resolve Kafka's jars (see $target/mvn.log)"
  touch "$target/.complete"
}

build_kafka() {
  [[ -n "$kafka_version" ]] || fail "no KAFKA_VERSION in services/fraudstack/devstack/kafka_server.py"
  kafka_jars
  local start=$SECONDS context="$work_dir/context/kafka" image="localhost/fraudstack-kafka:$kafka_version"
  rm -rf "$context" && mkdir -p "$context"
  cp "$here/kafka/Containerfile" "$here/kafka/kafka-start" "$here/kafka/kafka-ready" "$context/"
  cp -r "$cache_dir/kafka/$kafka_version/libs" "$context/libs"
  say "building $image (log: $log_dir/kafka.log)"
  podman build --network host --build-arg "BASE_IMAGE=$python_image" \
    --build-arg "KAFKA_VERSION=$kafka_version" -t "$image" "$context" \
    >"$log_dir/kafka.log" 2>&1 || fail "kafka failed (see $log_dir/kafka.log)"
  record kafka "$image" $((SECONDS - start))
}

# --- push -------------------------------------------------------------------------------------
push() { # image
  local image="$1" name host tls=()
  name="${image#localhost/}"
  host="${REGISTRY%%/*}"
  case "$host" in
    127.*|localhost|localhost:*|\[::1\]|\[::1\]:*) tls=(--tls-verify=false) ;;
  esac
  say "pushing $REGISTRY/$name"
  podman push ${tls[@]+"${tls[@]}"} "$image" "docker://$REGISTRY/$name" >>"$log_dir/push.log" 2>&1 \
    || fail "pushing $image to $REGISTRY failed (see $log_dir/push.log)"
}

# --- main -------------------------------------------------------------------------------------
total_start=$SECONDS
build_base
for name in $IMAGES; do
  case "$name" in
    redis|prometheus) build_debian_package_image "$name" ;;
    kafka) build_kafka ;;
    *) build_role "$name" ;;
  esac
done
if [[ -n "$REGISTRY" ]]; then
  for image in "${built[@]}"; do
    # the bases travel inside the images built on them
    case "$image" in */fraudstack-rootfs:*|*/fraudstack-python:*|*/fraudstack-python-dev:*) continue ;; esac
    push "$image"
  done
fi
say "done in $((SECONDS - total_start)) s"
printf '%-12s %-58s %6s %8s\n' image tag MB seconds
while IFS=$'\t' read -r name image mb seconds; do
  printf '%-12s %-58s %6s %8s\n' "$name" "$image" "$mb" "$seconds"
done <"$sizes"
