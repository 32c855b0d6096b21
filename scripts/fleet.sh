#!/usr/bin/env bash
# The Molecule fleet: real systemd hosts under rootful podman, built and driven by the project.
#
#   scripts/fleet.sh install          podman/runc/debootstrap (apt), containers.conf, the fleet venv
#                                     (molecule, molecule-plugins[podman], pytest-testinfra) and the
#                                     containers.podman collection (from the `ansible` package on PyPI)
#   scripts/fleet.sh image            the host image, cached by a content hash of its inputs
#   scripts/fleet.sh wheelhouse       wheels of spire_py's dependencies for the hosts (no PyPI there)
#   scripts/fleet.sh run SCENARIO [molecule command, default: test]
#   scripts/fleet.sh all              every scenario (make fleet)
#   scripts/fleet.sh ci               the default scenario when root with podman (make test), else
#                                     prints why it skips and exits 0
#   scripts/fleet.sh cleanup          remove every fleet container and network
#
# Nothing in /etc changes: podman reads a project-local containers.conf through CONTAINERS_CONF.
# State (venv, collections, wheelhouse, logs) lives outside the work tree, under $SPIRE_FLEET_STATE,
# so that the collection's sanity/lint copies of the repository never see it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# STATE, CONTAINERS_CONF, write_containers_conf, apt_mirror (shared with image.sh, podman-api.sh)
# shellcheck source=scripts/lib/containers.sh
. scripts/lib/containers.sh
FLEET_VENV=$STATE/venv
FLEET_PY=${FLEET_PY:-python3}
ANSIBLE_PKG_VERSION=${SPIRE_FLEET_ANSIBLE_PKG:-12.3.0}   # carries containers.podman (Python 3.11 tops out at 12.x)
SUITE=${SPIRE_FLEET_SUITE:-bookworm}
IMAGE_REPO=${SPIRE_FLEET_IMAGE_REPO:-localhost/spire-py-fleet}
# Every container and network the fleet makes carries this prefix (cleanup relies on it).
PREFIX=spire-fleet
SCENARIOS=(default x509pop sshpop upgrade ha day2 aws_iid)

# What the hosts need: systemd as PID 1, Python 3.11 with venv for the release venvs, ssh host
# keys for sshpop, PostgreSQL for the ha scenario's database host (disabled unless started),
# iproute2/procps for debugging and testinfra.
IMAGE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,iproute2,procps,openssh-server,openssh-client,postgresql,ca-certificates,less,sudo

export MOLECULE_PODMAN_EXECUTABLE=podman
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '== fleet: %s\n' "$*" >&2; }
die() { printf 'fleet: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install
install_packages() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ -x /usr/lib/podman/aardvark-dns ] || command -v aardvark-dns >/dev/null 2>&1 || missing+=(aardvark-dns)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]} and not root: cannot install them"
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get"
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_venv() {
  local want="ansible-core>=2.19,<2.20 molecule>=26 molecule-plugins[podman]>=25 pytest-testinfra>=10 pyyaml"
  local stamp=$FLEET_VENV/.fleet-installed
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "fleet venv at $FLEET_VENV"
  [ -x "$FLEET_VENV/bin/python" ] || "$FLEET_PY" -m venv "$FLEET_VENV"
  # shellcheck disable=SC2086
  "$FLEET_VENV/bin/python" -m pip install -q $want
  echo "$want" >"$stamp"
}

install_collections() {
  local dest=$STATE/collections/ansible_collections/containers/podman
  [ -f "$dest/MANIFEST.json" ] && [ -f "$STATE/collections/ansible_collections/ansible/posix/MANIFEST.json" ] && return 0
  log "containers.podman and ansible.posix from ansible==$ANSIBLE_PKG_VERSION (PyPI)"
  local dl
  dl=$(mktemp -d)
  "$FLEET_VENV/bin/python" -m pip download -q --no-deps -d "$dl" "ansible==$ANSIBLE_PKG_VERSION"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  "$FLEET_VENV/bin/python" - "$dl"/ansible-*.whl "$STATE/collections" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
# containers.podman for the podman driver and connection; ansible.posix for profile_tasks.
prefixes = ("ansible_collections/containers/podman/", "ansible_collections/ansible/posix/")
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(out, [n for n in zf.namelist() if n.startswith(prefixes)])
PY
  rm -rf "$dl"
  [ -f "$dest/MANIFEST.json" ] || die "containers.podman not found in ansible==$ANSIBLE_PKG_VERSION"
}

cmd_install() {
  install_packages
  write_containers_conf
  install_venv
  install_collections
}

# ---------------------------------------------------------------- image
# The image customisation (files written into the root file system before import).
customise_rootfs() {
  local dir=$1
  : >"$dir/etc/machine-id"
  rm -f "$dir/var/lib/dbus/machine-id"
  # Every host needs its own SSH host keys (sshpop): made at first boot, not baked in.
  rm -f "$dir"/etc/ssh/ssh_host_*
  cat >"$dir/etc/systemd/system/fleet-ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate this host's SSH host keys
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
  ln -sf ../fleet-ssh-host-keys.service "$dir/etc/systemd/system/multi-user.target.wants/fleet-ssh-host-keys.service"
  # sshd itself is not needed (Ansible reaches hosts with podman exec); PostgreSQL runs only on
  # the ha scenario's database host, which enables it.
  rm -f "$dir/etc/systemd/system/multi-user.target.wants/ssh.service" \
        "$dir/etc/systemd/system/sshd.service" \
        "$dir/etc/systemd/system/multi-user.target.wants/postgresql.service"
  # Units that have nothing to do in a container.
  for unit in systemd-remount-fs.service getty@tty1.service console-getty.service \
              systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
              e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    ln -sf /dev/null "$dir/etc/systemd/system/$unit"
  done
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

image_tag() {
  {
    echo "suite=$SUITE packages=$IMAGE_PACKAGES mirror=$(apt_mirror)"
    declare -f customise_rootfs
  } | sha256sum | cut -c1-12
}

cmd_image() {
  local tag
  tag=$IMAGE_REPO:$(image_tag)
  if podman image exists "$tag"; then
    echo "$tag"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "building the image needs root (debootstrap)"
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/spire-fleet-rootfs.XXXXXX")
  log "building $tag (debootstrap $SUITE from $(apt_mirror))"
  local t0=$SECONDS
  if ! debootstrap --variant=minbase --include="$IMAGE_PACKAGES" "$SUITE" "$dir" "$(apt_mirror)" \
        >"$STATE/debootstrap.log" 2>&1; then
    tail -30 "$STATE/debootstrap.log" >&2
    rm -rf "$dir"
    die "debootstrap failed (log: $STATE/debootstrap.log)"
  fi
  customise_rootfs "$dir"
  tar -C "$dir" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    - "$tag" >/dev/null
  rm -rf "$dir"
  log "image $tag built in $((SECONDS - t0))s"
  # Older images of the fleet are no longer referenced by anything.
  podman images --format '{{.Repository}}:{{.Tag}}' | grep "^$IMAGE_REPO:" | grep -vx "$tag" \
    | xargs -r podman rmi -f >/dev/null 2>&1 || true
  echo "$tag"
}

# ---------------------------------------------------------------- wheelhouse
# The hosts run Debian's Python 3.11 like this machine, so wheels made here install there.
cmd_wheelhouse() {
  local key dir
  key=$( { cat pyproject.toml roles/install/files/constraints.txt 2>/dev/null; "$FLEET_VENV/bin/python" -c 'import sys; print(sys.version_info[:2])'; } \
         | sha256sum | cut -c1-12)
  dir=$STATE/wheelhouse-$key
  if [ ! -f "$dir/.complete" ]; then
    log "wheelhouse $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    # spire_py's dependencies (from pyproject.toml, with the postgres extra when there is one),
    # plus its build-system requirements: the roles pip-install its sdist.
    local reqs
    reqs=$("$FLEET_VENV/bin/python" - <<'PY'
import tomllib
doc = tomllib.load(open("pyproject.toml", "rb"))
project = doc["project"]
extras = project.get("optional-dependencies", {})
for req in project.get("dependencies", []) + extras.get("postgres", []) + doc["build-system"]["requires"]:
    print(req)
PY
)
    mapfile -t reqs <<<"$reqs"
    # The versions the install role pins (roles/install/files/constraints.txt).
    local constraints=()
    [ -f roles/install/files/constraints.txt ] && constraints=(-c roles/install/files/constraints.txt)
    if ! "$FLEET_VENV/bin/python" -m pip wheel -q -w "$dir" "${constraints[@]}" "${reqs[@]}" >"$STATE/wheelhouse.log" 2>&1; then
      tail -20 "$STATE/wheelhouse.log" >&2
      die "pip wheel failed (log: $STATE/wheelhouse.log)"
    fi
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# ---------------------------------------------------------------- run
# cleanup_fleet [SCENARIO]: that scenario's containers and network, or every fleet one.
cleanup_fleet() {
  local scenario=${1:-} ids nets
  if [ -n "$scenario" ]; then
    ids=$(podman ps -aq --filter "label=spire_fleet=$scenario" 2>/dev/null || true)
    nets=$(podman network ls --format '{{.Name}}' 2>/dev/null | grep -x "$PREFIX-$scenario" || true)
  else
    ids=$(podman ps -aq --filter "label=spire_fleet" 2>/dev/null || true)
    nets=$(podman network ls --format '{{.Name}}' 2>/dev/null | grep "^$PREFIX-" || true)
  fi
  # shellcheck disable=SC2086
  [ -n "${ids// /}" ] && podman rm -f -t 2 $ids >/dev/null 2>&1 || true
  for net in $nets; do
    podman network rm -f "$net" >/dev/null 2>&1 || true
  done
}

fleet_env() {
  SPIRE_FLEET_IMAGE=$(cmd_image)
  SPIRE_FLEET_WHEELHOUSE=$(cmd_wheelhouse)
  export SPIRE_FLEET_IMAGE SPIRE_FLEET_WHEELHOUSE
  # The collection under test is a snapshot of this work tree (its tracked and unignored files),
  # taken once per run: every host of every step gets the same release even while the tree is
  # being edited. It is found as spire_py.spire next to containers.podman.
  RUN_COLLECTIONS=$(mktemp -d "${TMPDIR:-/tmp}/spire-fleet-collections.XXXXXX")
  local snap=$RUN_COLLECTIONS/ansible_collections/spire_py/spire
  mkdir -p "$snap"
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
      | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
      | tar --null -T - -cf - | tar -C "$snap" -xf -
  else
    tar --exclude=.venv --exclude=.git --exclude=__pycache__ -cf - . | tar -C "$snap" -xf -
  fi
  export ANSIBLE_COLLECTIONS_PATH=$RUN_COLLECTIONS:$STATE/collections
  export SPIRE_FLEET_COLLECTION=$snap
  export PATH=$FLEET_VENV/bin:$PATH
  # A podman connection with pipelining answers to the driver's `podman` (see its docstring).
  export ANSIBLE_CONNECTION_PLUGINS=$ROOT/molecule/_shared/connection_plugins
  export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
  # Molecule keeps its ephemeral state here, not in the work tree.
  export MOLECULE_EPHEMERAL_DIR_ROOT=$STATE/molecule
}

run_scenario() {
  local scenario=$1; shift
  local command=${1:-test}
  [ -f "molecule/$scenario/molecule.yml" ] || die "no scenario molecule/$scenario"
  # Molecule's testinfra verifier skips verify ("no tests found") unless the scenario has test
  # files of its own; the shared checks alone would then silently never run.
  if [ "$command" = test ] || [ "$command" = verify ]; then
    compgen -G "molecule/$scenario/tests/test_*.py" >/dev/null \
      || die "scenario $scenario has no molecule/$scenario/tests/test_*.py: its verify step would run nothing"
  fi
  local t0=$SECONDS rc=0
  log "scenario $scenario: molecule $command"
  if [ "$command" = test ]; then
    # Clean up whatever happens (the last destroy step can flake at network removal).
    molecule -c molecule/_shared/base.yml test -s "$scenario" || rc=$?
    cleanup_fleet "$scenario"
  else
    molecule -c molecule/_shared/base.yml "$command" -s "$scenario" || rc=$?
  fi
  log "scenario $scenario: molecule $command rc=$rc in $((SECONDS - t0))s"
  return "$rc"
}

# Containers and networks go whatever the outcome, also when CI's time limit stops the run.
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [ "${KEEP_HOSTS:-0}" = 1 ] || cleanup_fleet "${FLEET_SCENARIO:-}"
  rm -rf "${RUN_COLLECTIONS:-}"
  exit "$rc"
}

cmd_run() {
  [ $# -ge 1 ] || die "usage: fleet.sh run SCENARIO [molecule command]"
  cmd_install
  fleet_env
  # Single steps (converge, verify...) keep their hosts for the next step; `test` removes them.
  KEEP_HOSTS=1
  [ "${2:-test}" = test ] && KEEP_HOSTS=0
  FLEET_SCENARIO=$1
  trap on_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  run_scenario "$@"
}

cmd_all() {
  cmd_install
  fleet_env
  trap on_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  local failed=() s
  for s in "${SCENARIOS[@]}"; do
    run_scenario "$s" test || failed+=("$s")
  done
  if [ ${#failed[@]} -gt 0 ]; then
    die "failed scenarios: ${failed[*]}"
  fi
  log "all scenarios passed: ${SCENARIOS[*]}"
}

cmd_ci() {
  if [ "${SPIRE_FLEET_SKIP:-}" = 1 ]; then
    echo "fleet: skipped (SPIRE_FLEET_SKIP=1)"; return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "fleet: skipped: the fleet needs root (rootful podman, debootstrap); running as uid $(id -u)"; return 0
  fi
  if ! command -v podman >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
    echo "fleet: skipped: podman is not installed and there is no apt-get to install it"; return 0
  fi
  if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    if ! (install_packages); then
      echo "fleet: skipped: podman/runc/debootstrap could not be installed"; return 0
    fi
  fi
  local t0=$SECONDS
  cmd_install
  fleet_env
  FLEET_SCENARIO=default
  trap on_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  run_scenario default test
  log "ci: default scenario passed in $((SECONDS - t0))s (set-up included)"
}

case "${1:-}" in
  install) cmd_install ;;
  image) cmd_install; cmd_image ;;
  wheelhouse) cmd_install; cmd_wheelhouse ;;
  run) shift; cmd_run "$@" ;;
  all) cmd_all ;;
  ci) cmd_ci ;;
  cleanup) write_containers_conf; cleanup_fleet "${2:-}" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
