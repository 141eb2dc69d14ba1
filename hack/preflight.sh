#!/usr/bin/env bash
# Checks, in milliseconds and before anything slow, what `make demo`, `make test` and
# the other targets need, and installs what Debian's apt can install:
#
#   hack/preflight.sh [venv] [go] [servers]
#
#   venv     python3 (>= 3.11) with the venv module (Debian: python3-venv); skipped
#            when the virtual environment is already built
#   go       Go >= GO_MIN_VERSION (hack/versions.env); skipped when every pinned
#            binary is already cached (hack/build-tools.sh then only copies)
#   servers  the real servers the tests and the demo start: Prometheus and promtool
#            (Debian: prometheus), Alertmanager (Debian: prometheus-alertmanager)
#
# What is missing and apt can install is installed when this runs as root on a machine
# with apt-get (one apt-get call for everything); the services those packages start
# (systemd units, or the init scripts where there is no systemd) are stopped again,
# since the tests start their own servers on free loopback ports. Nothing else on the
# host is touched. Otherwise it exits 1 at once with the exact commands to run.
# Idempotent; when everything is there it installs nothing and prints nothing.
#
# Overrides (also read by tests/support): SELFHEAL_PROMETHEUS, SELFHEAL_PROMTOOL,
# SELFHEAL_ALERTMANAGER (binary paths), SELFHEAL_PYTHON (default python3), GO (default
# go), VENV (default .venv).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$top/hack/versions.env"

prometheus=${SELFHEAL_PROMETHEUS:-/usr/bin/prometheus}
promtool=${SELFHEAL_PROMTOOL:-/usr/bin/promtool}
alertmanager=${SELFHEAL_ALERTMANAGER:-/usr/bin/prometheus-alertmanager}
python=${SELFHEAL_PYTHON:-python3}
go=${GO:-go}
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv="$top/$venv" ;; esac

say() { printf 'preflight: %s\n' "$*" >&2; }

apt_pkgs=()   # Debian packages to install
wanted=()     # what they should bring, for the message when they did not
problems=()   # what apt cannot fix, each with what to do

need_venv() {
  [ -f "$venv/.stamp" ] && [ -x "$venv/bin/python" ] && return 0
  if ! command -v "$python" >/dev/null; then
    apt_pkgs+=(python3 python3-venv) wanted+=("$python")
    return 0
  fi
  # Debian's python3 has the venv module but not ensurepip, which `python3 -m venv`
  # needs: it then fails after printing a long apology. python3-venv brings it.
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    problems+=("Python >= 3.11 is needed; $python is $("$python" -V 2>&1). Debian 12 (bookworm) or newer has it.")
  elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_pkgs+=(python3-venv) wanted+=("$python's ensurepip")
  fi
}

# cached NAME VERSION: the binary is in .cache/bin or in the machine-wide copy that
# hack/build-tools.sh restores from (the same two places it looks).
cached() {
  local cache=${SELFHEAL_CACHE:-$top/.cache}
  local shared=${SELFHEAL_SHARED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selfheal/bin}
  [ -x "$cache/bin/$1-$2" ] || [ -x "$shared/$1-$2" ]
}

need_go() {
  cached kube-apiserver "$K8S_VERSION" && cached kube-controller-manager "$K8S_VERSION" &&
    cached kubectl "$K8S_VERSION" && cached etcd "$ETCD_VERSION" && cached helm "$HELM_VERSION" &&
    return 0
  local arch tarball
  case $(uname -m) in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  tarball=go$GO_MIN_VERSION.0.linux-$arch.tar.gz
  local install="install Go $GO_MIN_VERSION or newer from https://go.dev/dl/ (Debian's golang package is older), e.g.
      curl -fsSLO https://go.dev/dl/$tarball
      sudo rm -rf /usr/local/go && sudo tar -C /usr/local -xzf $tarball
      export PATH=/usr/local/go/bin:\$PATH"
  if ! command -v "$go" >/dev/null; then
    if [ -x /usr/local/go/bin/go ]; then
      problems+=("Go is installed in /usr/local/go but not on PATH: export PATH=/usr/local/go/bin:\$PATH")
    else
      problems+=("Go is needed to build kube-apiserver, kube-controller-manager, kubectl, etcd and helm (once, about 14 min; cached afterwards), and '$go' is not on PATH: $install")
    fi
    return 0
  fi
  local have
  have=$(GOTOOLCHAIN=local "$go" env GOVERSION 2>/dev/null || true) # go1.26.8
  have=${have#go}
  local major=${have%%.*} rest=${have#*.}
  local minor=${rest%%[!0-9]*}
  local want_major=${GO_MIN_VERSION%%.*} want_minor=${GO_MIN_VERSION#*.}
  if [ -z "$have" ] || [ -z "$minor" ] || [ "$major" -lt "$want_major" ] ||
    { [ "$major" -eq "$want_major" ] && [ "$minor" -lt "$want_minor" ]; }; then
    problems+=("Go $GO_MIN_VERSION or newer is needed (Kubernetes $K8S_VERSION's go.mod says so); $(command -v "$go") is go${have:-?}: $install")
  fi
}

need_servers() {
  [ -x "$prometheus" ] && [ -x "$promtool" ] || apt_pkgs+=(prometheus) wanted+=("$prometheus" "$promtool")
  [ -x "$alertmanager" ] || apt_pkgs+=(prometheus-alertmanager) wanted+=("$alertmanager")
}

# stop_service NAME: the package's service was started by its installation; stop it
# (only it: by its systemd unit, or by the init script's pid file).
stop_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl stop "$1" 2>/dev/null || true
  elif [ -x "/etc/init.d/$1" ]; then
    local pidfile="/run/prometheus/$1.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      "/etc/init.d/$1" stop >/dev/null 2>&1 || true
    fi
  fi
}

if [ $# -eq 0 ]; then set -- venv go servers; fi
for what in "$@"; do
  case $what in
    venv) need_venv ;;
    go) need_go ;;
    servers) need_servers ;;
    *) say "unknown check '$what' (venv, go, servers)"; exit 2 ;;
  esac
done

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  # Deduplicate, keep the order.
  mapfile -t apt_pkgs < <(printf '%s\n' "${apt_pkgs[@]}" | awk '!seen[$0]++')
  cmd="apt-get update && apt-get install -y --no-install-recommends ${apt_pkgs[*]}"
  if [ "${SELFHEAL_NO_INSTALL:-}" = 1 ]; then
    problems+=("missing Debian packages (SELFHEAL_NO_INSTALL=1, so not installing): sudo sh -c '$cmd'")
  elif [ "$(id -u)" -ne 0 ]; then
    problems+=("missing Debian packages; installing them needs root: sudo sh -c '$cmd'")
  elif ! command -v apt-get >/dev/null; then
    problems+=("missing ${apt_pkgs[*]} (Debian package names) and there is no apt-get here: install Prometheus >= 2.42 with promtool and Alertmanager >= 0.25 and point SELFHEAL_PROMETHEUS, SELFHEAL_PROMTOOL, SELFHEAL_ALERTMANAGER at them; python3 >= 3.11 with venv")
  elif [ ${#problems[@]} -gt 0 ]; then
    problems+=("missing Debian packages (not installed while the above is unsolved): $cmd")
  else
    say "installing ${apt_pkgs[*]} (Debian packages): $cmd"
    t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    for pkg in "${apt_pkgs[@]}"; do
      case $pkg in prometheus | prometheus-alertmanager) stop_service "$pkg" ;; esac
    done
    say "installed in $((SECONDS - t0))s"
    # What the packages were meant to bring must be there now.
    apt_pkgs=() wanted=()
    for what in "$@"; do
      case $what in venv) need_venv ;; servers) need_servers ;; esac
    done
    if [ ${#apt_pkgs[@]} -gt 0 ]; then
      problems+=("apt-get installed ${apt_pkgs[*]} but these are still missing: ${wanted[*]}")
    fi
  fi
fi

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do say "$p"; done
  exit 1
fi
