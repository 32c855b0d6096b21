#!/usr/bin/env bash
# The container image, started for real: builds it (scripts/image.sh), then runs under rootful
# podman a server container, an agent container attested with a join token, and a workload
# container (uid 1000, the agent's PID namespace as with hostPID on Kubernetes) that fetches
# its X.509-SVID through the agent's socket, which it sees only through a shared directory.
#
#   scripts/image-smoke.sh        (make fleet) build and smoke-test; exits non-zero on failure
#   scripts/image-smoke.sh ci     (make test) the same, or prints why it skips and exits 0
#
# The containers have no network but loopback (the agent joins the server's namespace) and
# read-only root file systems as on Kubernetes (podman's default tmpfs mounts off; /tmp is a
# tmpfs for the daemons as the manifests' emptyDir, none for the workload); their writable
# directories are temp dirs made here. Everything they leave is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${SPIRE_FLEET_STATE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/spire_py-fleet}
export CONTAINERS_CONF=$STATE/containers.conf
VPY=${VPY:-.venv/bin/python}
NAME=spire-image-smoke-$$
TD=example.org
WORKLOAD_ID=spiffe://$TD/workload/smoke
AGENT_ALIAS=spiffe://$TD/agent/smoke

log() { printf '== image-smoke: %s\n' "$*" >&2; }
die() { printf 'image-smoke: %s\n' "$*" >&2; exit 1; }

WORK=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    for c in server agent; do
      podman logs --tail 30 "$NAME-$c" 2>&1 | sed "s/^/[$c] /" >&2 || true
    done
  fi
  # One at a time, --ignore: a missing one (the workload runs with --rm) must not keep the others.
  for c in workload agent server; do
    podman rm --ignore -f -t 2 "$NAME-$c" >/dev/null 2>&1 || true
  done
  if podman ps -a --format '{{.Names}}' | grep -q "^$NAME-"; then
    printf 'image-smoke: containers %s-* were left behind\n' "$NAME" >&2
    rc=1
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}

# retry N CMD...: run CMD up to N times, a second apart; its last output on stdout.
retry() {
  local n=$1; shift
  local out
  for _ in $(seq 1 "$n"); do
    if out=$("$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 1
  done
  printf '%s\n' "$out" >&2
  return 1
}

write_configs() {
  mkdir -p "$WORK"/{server-conf,server-data,server-sock,agent-conf,agent-data,agent-sock}
  cat >"$WORK/server-conf/server.conf" <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "8081"
  socket_path = "/tmp/spire-server/private/api.sock"
  trust_domain = "$TD"
  data_dir = "/run/spire/data"
  log_level = "INFO"
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "/run/spire/data/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      keys_path = "/run/spire/data/keys.json"
    }
  }
}
EOF
  cat >"$WORK/agent-conf/agent.conf" <<EOF
agent {
  data_dir = "/run/spire/data"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "8081"
  socket_path = "/run/spire/agent-sockets/api.sock"
  trust_bundle_path = "/run/spire/config/bundle.crt"
  trust_domain = "$TD"
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
EOF
  # The image's user (uid 1000) owns what the daemons write; the configs stay root's.
  chown 1000:1000 "$WORK"/{server-data,server-sock,agent-data,agent-sock}
  chmod 0755 "$WORK" "$WORK"/server-conf "$WORK"/agent-conf
  chmod 0644 "$WORK"/server-conf/server.conf "$WORK"/agent-conf/agent.conf
}

smoke() {
  local t0=$SECONDS image
  image=$(bash scripts/image.sh build)
  log "image $image ready after $((SECONDS - t0))s"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/spire-image-smoke.XXXXXX")
  trap cleanup EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  write_configs

  [ "$(podman run --rm --network none "$image" id -u)" = 1000 ] || die "the image does not run as uid 1000"

  # deploy/kubernetes's server.conf and agent.conf pass validate in the image, whose Python
  # has the Kubernetes client the k8s plugins call.
  mkdir -p "$WORK/k8s"
  "$VPY" - "$WORK/k8s" <<'PY'
import sys, yaml
for name, key in (("server-configmap.yaml", "server.conf"), ("agent-configmap.yaml", "agent.conf")):
    with open(f"deploy/kubernetes/{name}") as f, open(f"{sys.argv[1]}/{key}", "w") as out:
        out.write(yaml.safe_load(f)["data"][key])
PY
  chmod -R a+rX "$WORK/k8s"
  podman run --rm --network none -v "$WORK/k8s:/k8s:ro" "$image" sh -ec '
    spire-server validate -config /k8s/server.conf
    spire-agent validate -config /k8s/agent.conf
    python3 -c "import kubernetes.client, spire_py.common.plugins.k8s_apiserver"' >&2 \
    || die "deploy/kubernetes's configuration does not validate in the image"

  # /tmp: a tmpfs, as the manifests' emptyDir (the daemons need a writable temp directory).
  podman run -d --name "$NAME-server" --network none --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=64m \
    -v "$WORK/server-conf:/run/spire/config:ro" -v "$WORK/server-data:/run/spire/data" \
    -v "$WORK/server-sock:/tmp/spire-server/private" \
    "$image" spire-server run -config /run/spire/config/server.conf >/dev/null
  retry 60 podman exec "$NAME-server" spire-server healthcheck >/dev/null || die "the server never became healthy"
  log "server healthy after $((SECONDS - t0))s"

  # The agents' alias that playbooks/kubernetes.yml (and the README) create with kubectl exec:
  # accepted once, then refused with the message the role treats as "already there".
  local alias_cmd=(spire-server entry create -node -spiffeID "spiffe://$TD/ns/spire/sa/spire-agent"
                   -selector k8s_psat:cluster:demo-cluster -selector k8s_psat:agent_ns:spire
                   -selector k8s_psat:agent_sa:spire-agent)
  podman exec "$NAME-server" "${alias_cmd[@]}" >/dev/null || die "the node alias entry was refused"
  if podman exec "$NAME-server" "${alias_cmd[@]}" >"$WORK/again.out" 2>&1 \
     || ! grep -q 'similar entry already exists' "$WORK/again.out"; then
    cat "$WORK/again.out" >&2
    die "creating the alias again did not answer 'similar entry already exists'"
  fi

  local token
  token=$(podman exec "$NAME-server" spire-server token generate -spiffeID "$AGENT_ALIAS" | sed -n 's/^Token: //p')
  [ -n "$token" ] || die "no join token"
  podman exec "$NAME-server" spire-server bundle show >"$WORK/agent-conf/bundle.crt"
  chmod 0644 "$WORK/agent-conf/bundle.crt"
  podman exec "$NAME-server" spire-server entry create -parentID "$AGENT_ALIAS" -spiffeID "$WORKLOAD_ID" \
    -selector unix:uid:1000 >/dev/null

  podman run -d --name "$NAME-agent" --network "container:$NAME-server" --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=64m \
    -v "$WORK/agent-conf:/run/spire/config:ro" -v "$WORK/agent-data:/run/spire/data" \
    -v "$WORK/agent-sock:/run/spire/agent-sockets" \
    "$image" spire-agent run -config /run/spire/config/agent.conf -joinToken "$token" >/dev/null
  retry 60 podman exec "$NAME-agent" spire-agent healthcheck -socketPath /run/spire/agent-sockets/api.sock \
    >/dev/null || die "the agent never became healthy"
  log "agent healthy after $((SECONDS - t0))s"

  # The liveness and readiness probes of deploy/kubernetes, as written there, pass in the
  # containers (same socket paths as the manifests').
  "$VPY" - "$NAME" <<'PY' || die "a probe of deploy/kubernetes fails"
import subprocess, sys, yaml
for manifest, side in (("server-statefulset.yaml", "server"), ("agent-daemonset.yaml", "agent")):
    with open(f"deploy/kubernetes/{manifest}") as f:
        container = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        cmd = container[probe]["exec"]["command"]
        run = subprocess.run(["podman", "exec", f"{sys.argv[1]}-{side}", *cmd], capture_output=True, text=True,
                             timeout=60)
        print(f"{side} {probe}: {' '.join(cmd)}: rc={run.returncode} {(run.stdout + run.stderr).strip()}",
              file=sys.stderr)
        if run.returncode != 0:
            sys.exit(1)
PY

  # The workload: its own container, the socket directory read-only, no network.
  local out
  out=$(retry 30 podman run --rm --name "$NAME-workload" --network none --read-only --read-only-tmpfs=false --pid "container:$NAME-agent" \
        -v "$WORK/agent-sock:/run/spire/agent-sockets:ro" \
        "$image" spire-agent api fetch x509 -socketPath /run/spire/agent-sockets/api.sock) \
    || die "the workload got no SVID"
  grep -q "SPIFFE ID:[[:space:]]*$WORKLOAD_ID" <<<"$out" || { printf '%s\n' "$out" >&2; die "the workload's SVID is not $WORKLOAD_ID"; }
  log "workload fetched $WORKLOAD_ID through the agent socket; passed in $((SECONDS - t0))s"
}

cmd_ci() {
  if [ "${SPIRE_IMAGE_SMOKE_SKIP:-}" = 1 ]; then
    echo "image-smoke: skipped (SPIRE_IMAGE_SMOKE_SKIP=1)"; return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "image-smoke: skipped: the image is built with debootstrap and run under rootful podman; running as uid $(id -u)"
    return 0
  fi
  if ! command -v podman >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
    echo "image-smoke: skipped: podman is not installed and there is no apt-get to install it"; return 0
  fi
  smoke
}

case "${1:-run}" in
  run) smoke ;;
  ci) cmd_ci ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
