#!/usr/bin/env bash
# Builds the Kubernetes binaries the cluster tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubelet, kubectl,
# etcd, CoreDNS for the cluster's DNS, and Prometheus) from the Go module
# proxy, into a version-keyed cache directory, and skips the ones already
# there. Upstream's main module has replace
# directives, so `go install k8s.io/kubernetes/cmd/...@v` cannot build it:
# a throwaway wrapper module requires k8s.io/kubernetes and maps each of its
# staging modules to the published version.
#
#   test/kube/build-kubernetes.sh            # prints the cache directory
#
# A cold build (empty module and build caches) took 13 minutes on two
# cores, plus about 2 for Prometheus; a warm one takes seconds.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
PROMETHEUS_MODULE=${PROMETHEUS_MODULE:-v0.316.0}
STAGING_VERSION=v0.${K8S_VERSION#v1.}
CACHE=${TRELLIS_K8S_CACHE:-$HOME/.cache/trellis/k8s-$K8S_VERSION}
BIN=$CACHE/bin
mkdir -p "$BIN"

# go_install NAME PACKAGE@VERSION [FLAGS...] builds a static binary into
# $BIN/NAME, outside any module: CoreDNS and Prometheus install as they are
# (no replace directives).
go_install() {
  local name=$1 pkg=$2 start=$SECONDS
  shift 2
  [ -x "$BIN/$name" ] && return
  echo "--- $pkg: building into $BIN (cold: a few minutes)" >&2
  (cd / && CGO_ENABLED=0 GOBIN=$BIN.$name go install -ldflags "-s -w" "$@" "$pkg")
  local base=${pkg%@*}
  mv "$BIN.$name/${base##*/}" "$BIN/$name.tmp" && rmdir "$BIN.$name" && mv "$BIN/$name.tmp" "$BIN/$name"
  echo "--- built $name in $((SECONDS - start)) s" >&2
}
go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
# The Prometheus of `trellis install --prometheus`, with Kubernetes service
# discovery only (its module v0.3X.Y is Prometheus v3.X.Y).
go_install prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE" \
  -tags remove_all_sd,enable_kubernetes_sd

binaries=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl etcd)
missing=()
for b in "${binaries[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  echo "$BIN"
  exit 0
fi

work=$CACHE/wrapper
mkdir -p "$work"
cd "$work"
echo "--- kubernetes $K8S_VERSION: building ${missing[*]} into $BIN (cold: about 10 min)" >&2
info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
upstream_dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$info")
upstream_mod=$(sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p' <<<"$info")
{
  echo "module trellis.test/kubernetes-build"
  echo
  grep -E '^(go|godebug) ' "$upstream_mod" || true
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo ")"
  echo
  # k8s.io/api => ./staging/src/k8s.io/api becomes k8s.io/api => k8s.io/api v0.N.M
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" |
    awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
} >go.mod

main_of() {
  case $1 in
    kube-apiserver) echo cmd/kube-apiserver/apiserver.go ;;
    kube-controller-manager) echo cmd/kube-controller-manager/controller-manager.go ;;
    kube-scheduler) echo cmd/kube-scheduler/scheduler.go ;;
    kube-proxy) echo cmd/kube-proxy/proxy.go ;;
    kubelet) echo cmd/kubelet/kubelet.go ;;
    kubectl) echo cmd/kubectl/kubectl.go ;;
  esac
}
for b in "${binaries[@]}"; do
  mkdir -p "cmd/$b"
  if [ "$b" = etcd ]; then
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >cmd/etcd/main.go
  else
    cp "$upstream_dir/$(main_of "$b")" "cmd/$b/main.go"
    chmod u+w "cmd/$b/main.go"
  fi
done
go mod tidy >&2

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
# The kubelet first: it pays for most shared dependencies.
for b in kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd kubectl; do
  [ -x "$BIN/$b" ] && continue
  start=$SECONDS
  CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$BIN/$b.tmp" "./cmd/$b"
  mv "$BIN/$b.tmp" "$BIN/$b"
  echo "--- built $b in $((SECONDS - start)) s" >&2
done
echo "$BIN"
