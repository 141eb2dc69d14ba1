#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries, etcd and helm from Go
# modules with the machine's Go, and caches them in .cache/bin/<name>-<version>.
# A binary is rebuilt only when its pinned version changes. Idempotent.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$top/hack/versions.env"
cache=${SELFHEAL_CACHE:-$top/.cache}
bin="$cache/bin"
# A machine-wide copy, so a fresh clone on the same machine (CI) links instead of
# building. The repo's .cache/bin stays the one the project runs from.
shared=${SELFHEAL_SHARED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selfheal/bin}
# Go, new enough, unless every binary is cached: said in the first second, not after a
# failed build.
"$top/hack/preflight.sh" go
mkdir -p "$bin"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
# Builds are memory hungry on a 2-core machine; one package graph at a time.
export GOMAXPROCS=${GOMAXPROCS:-2}

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# have NAME VERSION: true when the binary is in .cache/bin (restored from the
# machine-wide copy when only that one has it).
have() {
  local f="$bin/$1-$2"
  if [ ! -x "$f" ] && [ -x "$shared/$1-$2" ]; then
    cp "$shared/$1-$2" "$f.tmp" && mv "$f.tmp" "$f"
    log "reused $1 $2 from $shared"
  fi
  [ -x "$f" ]
}

# build NAME VERSION MODDIR PKG: go build PKG inside the throwaway module MODDIR.
build() {
  local name=$1 version=$2 moddir=$3 pkg=$4 out="$bin/$1-$2"
  if [ -x "$out" ]; then
    ln -sf "$(basename "$out")" "$bin/$name"
    return 0
  fi
  log "building $name $version (first build takes minutes; cached afterwards)"
  local t0=$SECONDS
  # -mod=mod: the throwaway module's go.sum was tidied for an importable package
  # (a main package cannot be imported), so let the build add the sums it lacks.
  (cd "$moddir" && go build -mod=mod -trimpath -ldflags "-s -w $5" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  mkdir -p "$shared" && cp "$out" "$shared/$(basename "$out").tmp" && \
    mv "$shared/$(basename "$out").tmp" "$shared/$(basename "$out")" || true
  ln -sf "$(basename "$out")" "$bin/$name"
  log "built $name in $((SECONDS - t0))s"
}

# k8s.io/kubernetes is not meant to be a dependency: its go.mod replaces the
# staging modules (k8s.io/api, ...) with local paths. A consumer has to replace
# each of them with the published v0.<minor>.<patch> tag of the same release.
k8s_module() {
  local dir="$cache/mod/kubernetes-$K8S_VERSION"
  if [ -f "$dir/go.sum" ] && [ -f "$dir/.complete" ]; then echo "$dir"; return; fi
  mkdir -p "$dir"
  local staging="v0.${K8S_VERSION#v1.}"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module selfheal.local/k8sbuild"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging' | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n)\n' >"$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null)
  touch "$dir/.complete"
  echo "$dir"
}

simple_module() { # NAME MODULE VERSION -> a module dir requiring MODULE@VERSION
  local dir="$cache/mod/$1-$3"
  if [ -f "$dir/.complete" ]; then echo "$dir"; return; fi
  mkdir -p "$dir"
  printf 'module selfheal.local/%sbuild\n\ngo 1.24\n' "$1" >"$dir/go.mod"
  printf 'package tools\n\nimport _ "%s"\n' "$4" >"$dir/tools.go"
  (cd "$dir" && go get "$2@$3" >/dev/null 2>&1 && go mod tidy >/dev/null)
  touch "$dir/.complete"
  echo "$dir"
}

want=${*:-kube-apiserver kube-controller-manager kubectl etcd helm}
for tool in $want; do
  case $tool in
    kube-apiserver|kube-controller-manager|kubectl)
      kv="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
      have "$tool" "$K8S_VERSION" || mdir=$(k8s_module)
      build "$tool" "$K8S_VERSION" "${mdir:-.}" "k8s.io/kubernetes/cmd/$tool" "$kv" ;;
    etcd)
      have etcd "$ETCD_VERSION" || mdir=$(simple_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3/etcdmain)
      build etcd "$ETCD_VERSION" "${mdir:-.}" go.etcd.io/etcd/server/v3 "" ;;
    helm)
      have helm "$HELM_VERSION" || mdir=$(simple_module helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/pkg/action)
      build helm "$HELM_VERSION" "${mdir:-.}" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    *) log "unknown tool $tool"; exit 2 ;;
  esac
  unset mdir
done
