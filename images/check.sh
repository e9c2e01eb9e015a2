#!/usr/bin/env bash
# Run every built image the way the chart runs it, and fail on the first that does not work:
#   role images   uid 10001, read-only root filesystem, /tmp a tmpfs (the chart's emptyDir), no
#                 network: `<role> --help`; every module the role's command loads imports with
#                 only the role's extra installed; the serve and operator images lack the
#                 libraries they must not carry
#   redis         as uid 999, read-only root: starts and answers PING
#   kafka         as uid 1001, read-only root: formats its storage, starts, and kafka-ready
#                 (the chart's readiness probe) passes
#   prometheus    as uid 65534: `--version`, and promtool checks its configuration
#
#   images/check.sh                      # every image built by images/build.sh
#   IMAGES="serve operator" images/check.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
IMAGES="${IMAGES:-serve ingest aggregate snapshot train operator redis kafka prometheus}"

version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$root/pyproject.toml")"
kafka_version="$(sed -n 's/^KAFKA_VERSION = "\(.*\)"$/\1/p' "$root/services/fraudstack/devstack/kafka_server.py")"

failures=0
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok   $*" >&2; }

# as the chart's securityContext and volumes have it
run_locked() { # user image [podman run options...] -- [arguments...]
  local user="$1" image="$2" options=()
  shift 2
  while [[ $# -gt 0 && "$1" != "--" ]]; do options+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  podman run --rm --network none --user "$user" --read-only --read-only-tmpfs=false \
    --tmpfs /tmp:rw,size=256m --cap-drop ALL --security-opt no-new-privileges \
    ${options[@]+"${options[@]}"} "$image" "$@"
}

# the newest tag of localhost/fraudstack-<name> (Redis and Prometheus carry Debian's version)
newest_tag() {
  podman images --format '{{.Repository}}:{{.Tag}}' --sort created "localhost/fraudstack-$1" | head -n1
}

# modules each role's command loads (what tests/test_dependencies.py starts from), and libraries
# its image must not carry
declare -A MODULES=(
  [serve]="fraudstack.serve.cli fraudstack.serve.app fraudstack.serve.gunicorn_conf"
  [ingest]="fraudstack.ingest.cli fraudstack.ingest.app fraudstack.ingest.replay"
  [aggregate]="fraudstack.aggregate.cli fraudstack.aggregate.service fraudstack.aggregate.rebuild"
  [snapshot]="fraudstack.snapshot.cli fraudstack.snapshot.consumer"
  [train]="fraudstack.train.cli fraudstack.train.job fraudstack.train.export"
  [operator]="fraudmodel_operator.__main__ fraudmodel_operator.handlers"
)
declare -A ABSENT=(
  [serve]="sklearn kopf kubernetes aiokafka pyarrow matplotlib redis"
  [operator]="numpy pyarrow sklearn onnxruntime onnx matplotlib aiokafka"
)

check_role() {
  local role="$1" image="localhost/fraudstack-$1:$version" help
  podman image exists "$image" || { fail "$image: not built"; return; }
  if [[ "$role" == operator ]]; then
    help="$(run_locked 10001:10001 "$image" -- --help 2>&1)" || { fail "$image --help: $help"; return; }
  else
    help="$(run_locked 10001:10001 "$image" -- "$role" --help 2>&1)" || { fail "$image $role --help: $help"; return; }
  fi
  [[ "$help" == usage:* ]] || { fail "$image: --help printed no usage: $help"; return; }
  local script="import importlib, importlib.util, sys
for name in sys.argv[1].split():
    importlib.import_module(name)
present = [name for name in sys.argv[2].split() if importlib.util.find_spec(name)]
if present:
    sys.exit('carries ' + ', '.join(present))"
  local out
  out="$(run_locked 10001:10001 "$image" --entrypoint python -- -c "$script" \
    "${MODULES[$role]}" "${ABSENT[$role]:-}" 2>&1)" || { fail "$image: $out"; return; }
  pass "$image: --help as uid 10001 on a read-only root; ${MODULES[$role]// /, } import"
}

check_redis() {
  local image name out
  image="$(newest_tag redis)"
  [[ -n "$image" ]] || { fail "fraudstack-redis: not built"; return; }
  name="fraudstack-check-redis-$$"
  podman run -d --name "$name" --network none --user 999:999 --read-only --read-only-tmpfs=false \
    --tmpfs /data:rw --cap-drop ALL "$image" --requirepass check --save "" >/dev/null
  for _ in $(seq 50); do
    out="$(podman exec -e REDISCLI_AUTH=check "$name" redis-cli ping 2>/dev/null || true)"
    [[ "$out" == PONG ]] && break
    sleep 0.2
  done
  podman rm -f "$name" >/dev/null
  [[ "$out" == PONG ]] && pass "$image: PONG as uid 999 on a read-only root" || fail "$image: no PONG"
}

check_kafka() {
  local image="localhost/fraudstack-kafka:$kafka_version" name="fraudstack-check-kafka-$$" ready=0 data
  podman image exists "$image" || { fail "$image: not built"; return; }
  # the data volume belongs to the broker's group, as the chart's fsGroup makes it
  data="$(mktemp -d)"
  chown 1001:1001 "$data"
  podman run -d --name "$name" --network none --user 1001:1001 --read-only --read-only-tmpfs=false \
    --tmpfs /tmp:rw -v "$data:/var/lib/kafka/data" --cap-drop ALL \
    -e KAFKA_ADVERTISED_HOST=127.0.0.1 "$image" >/dev/null
  for _ in $(seq 120); do
    if podman exec "$name" /usr/local/bin/kafka-ready 2>/dev/null; then ready=1; break; fi
    sleep 0.5
  done
  if [[ "$ready" == 1 ]]; then
    pass "$image: KRaft node ready as uid 1001 on a read-only root"
  else
    fail "$image: kafka-ready never passed; last log lines: $(podman logs --tail 5 "$name" 2>&1 | tr '\n' ' ')"
  fi
  podman rm -f "$name" >/dev/null
  rm -rf "$data"
}

check_prometheus() {
  local image out
  image="$(newest_tag prometheus)"
  [[ -n "$image" ]] || { fail "fraudstack-prometheus: not built"; return; }
  out="$(run_locked 65534:65534 "$image" -- --version 2>&1)" || { fail "$image --version: $out"; return; }
  out="$(run_locked 65534:65534 "$image" --entrypoint promtool -- check config /etc/prometheus/prometheus.yml 2>&1)" \
    || { fail "$image promtool: $out"; return; }
  pass "$image: --version and promtool check config as uid 65534"
}

for name in $IMAGES; do
  case "$name" in
    redis) check_redis ;;
    kafka) check_kafka ;;
    prometheus) check_prometheus ;;
    *) check_role "$name" ;;
  esac
done
[[ "$failures" == 0 ]] || { echo "$failures image check(s) failed" >&2; exit 1; }
echo "every image checked" >&2
