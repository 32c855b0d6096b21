#!/usr/bin/env bash
# The container image (Containerfile) built with podman, without reaching a container registry.
#
#   scripts/image.sh build     (make image) localhost/spire_py:<version> and :latest
#   scripts/image.sh base      the base image only: Debian (debootstrap minbase) with python3
#                              and python3-venv, cached by a content hash of its inputs
#   scripts/image.sh tag       prints the versioned tag
#
# SPIRE_IMAGE_BASE=<image> builds on that image instead (e.g. Python's slim image where a
# registry is reachable). The build context is a temp dir holding pyproject.toml, README.md,
# src/ and wheels/ (the dependencies, made here with pip wheel), and the build runs with
# --network=none: what goes into the image is what this machine made.
#
# Nothing in /etc changes: podman reads the project-local containers.conf (the one
# scripts/fleet.sh writes) through CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# shellcheck source=scripts/lib/containers.sh
. scripts/lib/containers.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1
VPY=${VPY:-$ROOT/.venv/bin/python}
SUITE=${SPIRE_IMAGE_SUITE:-bookworm}
BASE_REPO=localhost/spire_py-base
IMAGE_REPO=${SPIRE_IMAGE_REPO:-localhost/spire_py}
BASE_PACKAGES=python3,python3-venv,ca-certificates

log() { printf '== image: %s\n' "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }

version() {
  "$VPY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

install_packages() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ -z "${SPIRE_IMAGE_BASE:-}" ]; then
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]} and not root: cannot install them"
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get"
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

slim_rootfs() {
  local dir=$1
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
}

base_tag() {
  { echo "suite=$SUITE packages=$BASE_PACKAGES mirror=$(apt_mirror)"; declare -f slim_rootfs; } \
    | sha256sum | cut -c1-12
}

cmd_base() {
  if [ -n "${SPIRE_IMAGE_BASE:-}" ]; then
    echo "$SPIRE_IMAGE_BASE"
    return 0
  fi
  local tag
  tag=$BASE_REPO:$SUITE-$(base_tag)
  if podman image exists "$tag"; then
    echo "$tag"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "building the base image needs root (debootstrap); or set SPIRE_IMAGE_BASE"
  local dir t0=$SECONDS
  dir=$(mktemp -d "${TMPDIR:-/tmp}/spire-image-rootfs.XXXXXX")
  log "base $tag (debootstrap --variant=minbase $SUITE from $(apt_mirror))"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$dir" "$(apt_mirror)" \
        >"$STATE/image-debootstrap.log" 2>&1; then
    tail -30 "$STATE/image-debootstrap.log" >&2
    rm -rf "$dir"
    die "debootstrap failed (log: $STATE/image-debootstrap.log)"
  fi
  slim_rootfs "$dir"
  tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  rm -rf "$dir"
  log "base $tag built in $((SECONDS - t0))s"
  podman images --format '{{.Repository}}:{{.Tag}}' | grep "^$BASE_REPO:" | grep -vx "$tag" \
    | xargs -r podman rmi -f >/dev/null 2>&1 || true
  echo "$tag"
}

# The dependencies and the build-system requirements as wheels, cached by pyproject.toml and
# the Python version (the base is Debian's Python 3.11, like this machine's).
wheelhouse() {
  local key dir
  key=$( { cat pyproject.toml; "$VPY" -c 'import sys; print(sys.version_info[:2])'; } | sha256sum | cut -c1-12)
  dir=$STATE/image-wheels-$key
  if [ ! -f "$dir/.complete" ]; then
    log "wheelhouse $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    local reqs
    reqs=$("$VPY" - <<'PY'
import tomllib
doc = tomllib.load(open("pyproject.toml", "rb"))
for req in doc["project"].get("dependencies", []) + doc["build-system"]["requires"]:
    print(req)
PY
)
    mapfile -t reqs <<<"$reqs"
    if ! "$VPY" -m pip wheel -q -w "$dir" "${reqs[@]}" >"$STATE/image-wheels.log" 2>&1; then
      tail -20 "$STATE/image-wheels.log" >&2
      die "pip wheel failed (log: $STATE/image-wheels.log)"
    fi
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# The earlier builds' images, untagged now, with the layers only they used: removing one
# leaves its parent untagged and childless, hence the passes (bounded).
prune_untagged() {
  local ids
  for _ in $(seq 1 20); do
    ids=$(podman images -a -q --filter dangling=true --filter label=io.spire_py.image)
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086
    podman rmi $ids >/dev/null 2>&1 || return 0
  done
}

cmd_build() {
  local base wheels ver ctx t0=$SECONDS
  base=$(cmd_base)
  wheels=$(wheelhouse)
  ver=$(version)
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/spire-image-context.XXXXXX")
  trap 'rm -rf "$ctx"' RETURN
  # The tracked and unignored files of src/ (no caches, no other checkout's leftovers); outside
  # a git work tree (an unpacked release), the files less the caches.
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- src pyproject.toml README.md \
      | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
      | tar --null -T - -cf - | tar -C "$ctx" -xf -
  else
    tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - src pyproject.toml README.md \
      | tar -C "$ctx" -xf -
  fi
  mkdir -p "$ctx/wheels"
  cp "$wheels"/*.whl "$ctx/wheels/"
  cp .containerignore "$ctx/"
  log "building $IMAGE_REPO:$ver on $base"
  local args=(--network=none --build-arg "BASE=$base" --build-arg "VERSION=$ver" -f "$ROOT/Containerfile")
  # The build stage is tagged too: it keeps the dependency layer cached while the earlier
  # builds' stages, untagged, are pruned below with everything only they used.
  podman build -q "${args[@]}" --target build -t "$IMAGE_REPO-build:latest" "$ctx" >/dev/null
  podman build -q "${args[@]}" -t "$IMAGE_REPO:$ver" -t "$IMAGE_REPO:latest" "$ctx" >/dev/null
  prune_untagged
  log "$IMAGE_REPO:$ver and :latest built in $((SECONDS - t0))s"
  echo "$IMAGE_REPO:$ver"
}

case "${1:-build}" in
  build) install_packages; write_containers_conf; cmd_build ;;
  base) install_packages; write_containers_conf; cmd_base ;;
  tag) echo "$IMAGE_REPO:$(version)" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
