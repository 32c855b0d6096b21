#!/usr/bin/env bash
# A real Docker Engine API for tests: rootful podman's compatible service on a socket of our own.
#
#   scripts/podman-api.sh start DIR   podman (apt) when missing, the project's containers.conf,
#                                     `podman system service` on DIR/podman.sock; prints
#                                     DOCKER_HOST=unix://DIR/podman.sock and CONTAINERS_CONF=...
#   scripts/podman-api.sh stop DIR    stops the service started for DIR
#
# Nothing in /etc changes: podman reads the project-local containers.conf (the same one
# scripts/fleet.sh writes) through CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/containers.sh
. scripts/lib/containers.sh

die() { printf 'podman-api: %s\n' "$*" >&2; exit 1; }

install_podman() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]} and not root: cannot install them"
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get"
  printf 'podman-api: apt-get install %s\n' "${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

cmd_start() {
  local dir=${1:?usage: podman-api.sh start DIR}
  [ "$(id -u)" = 0 ] || die "rootful podman needs root (running as uid $(id -u))"
  install_podman
  write_containers_conf
  mkdir -p "$dir"
  local sock=$dir/podman.sock
  rm -f "$sock"
  # --time=0: serve until stopped. setsid: the service outlives this script, not the test.
  setsid podman system service --time=0 "unix://$sock" >"$dir/podman-api.log" 2>&1 </dev/null &
  echo $! >"$dir/podman-api.pid"
  local i
  for i in $(seq 1 100); do
    [ -S "$sock" ] && break
    kill -0 "$(cat "$dir/podman-api.pid")" 2>/dev/null || { cat "$dir/podman-api.log" >&2; die "podman system service exited"; }
    sleep 0.1
  done
  [ -S "$sock" ] || die "no socket at $sock after 10s"
  echo "DOCKER_HOST=unix://$sock"
  echo "CONTAINERS_CONF=$CONTAINERS_CONF"
}

cmd_stop() {
  local dir=${1:?usage: podman-api.sh stop DIR}
  local pidfile=$dir/podman-api.pid
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile" "$dir/podman.sock"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
