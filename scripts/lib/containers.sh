# shellcheck shell=bash
# Sourced by scripts/fleet.sh, scripts/image.sh and scripts/podman-api.sh (after `cd` to the
# repository): the podman state they share and the Debian mirror their debootstrap uses.

STATE=${SPIRE_FLEET_STATE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/spire_py-fleet}
export CONTAINERS_CONF=$STATE/containers.conf

# The project-local containers.conf, selected with CONTAINERS_CONF: nothing in /etc changes.
write_containers_conf() {
  mkdir -p "$STATE"
  # runc: crun refuses this VM's hybrid cgroups. Pinned ulimits: root may not raise limits here.
  cat >"$CONTAINERS_CONF.tmp.$$" <<'CONF'
# Written by scripts/lib/containers.sh; selected with CONTAINERS_CONF, nothing in /etc changes.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
CONF
  mv "$CONTAINERS_CONF.tmp.$$" "$CONTAINERS_CONF"
}

# The Debian mirror this machine's apt uses (deb822 or one-line format).
apt_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{print $2}' | grep -v security | head -1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
