#!/usr/bin/env bash
# A real single-node Kubernetes cluster for Trellis's end-to-end tests: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and a
# kubelet running Pods through Debian's containerd, runc and CNI plugins.
# No Docker, no registry: images are imported into containerd from tarballs.
#
#   test/kube/cluster.sh start [IMAGE.tar ...]   # start it (fresh etcd), import images
#   test/kube/cluster.sh import IMAGE.tar ...    # import more images
#   test/kube/cluster.sh stop                    # stop it and undo everything it did
#   test/kube/cluster.sh kubeconfig              # print the admin kubeconfig's path
#
# Root only. Pods and Services use 10.244.0.0/24 (bridge cni0) and
# 10.96.0.0/16; the node is 10.250.0.1/32 on lo. Nothing is masqueraded or
# forwarded off the machine. Binaries come from test/kube/build-kubernetes.sh.
set -euo pipefail
# The Go that go.mod names; the go command fetches it once when the
# machine's own is older.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
K8S_DIR=${TRELLIS_K8S_DIR:-/var/lib/trellis-kube}
PKI=$K8S_DIR/pki
STATE=$K8S_DIR/state
# PID files in /run, which a reboot empties: a stale PID never names
# another process.
RUN=${TRELLIS_K8S_RUN:-/run/trellis-kube}
BIN=${TRELLIS_K8S_CACHE:-$HOME/.cache/trellis/k8s-${K8S_VERSION:-v1.37.2}}/bin
ADMIN=$K8S_DIR/admin.kubeconfig
# Images of static binaries from the cache: the cluster's DNS, and the
# Prometheus the tests deploy with `trellis install --prometheus`.
COREDNS_IMAGE=localhost/coredns:v1.14.7
PROMETHEUS_IMAGE=localhost/prometheus:v3.16.0
NODE_IP=10.250.0.1
NODE=k8s-node
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
CNI_NAME=trellis-test
CNI_CONF=/etc/cni/net.d/10-$CNI_NAME.conflist
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { echo "--- kube: $*" >&2; }

bin() { echo "$BIN/$1"; }
kubectl() { "$(bin kubectl)" --kubeconfig "$ADMIN" "$@"; }

# wait_for TIMEOUT DESCRIPTION CMD...: retries CMD every half second.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# daemon NAME CMD...: starts CMD in the background, logging to $RUN/NAME.log.
daemon() {
  local name=$1; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop_daemon() {
  local pidfile=$RUN/$1.pid
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

need_packages() {
  local need=()
  for tool in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins conntrack:conntrack openssl:openssl iptables:iptables; do
    local t=${tool%%:*}
    if [[ $t == /* ]]; then [ -e "$t" ] || need+=("${tool#*:}"); else command -v "$t" >/dev/null || need+=("${tool#*:}"); fi
  done
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

pki() {
  [ -f "$PKI/tokens.csv" ] && return 0
  log "PKI in $PKI"
  mkdir -p "$PKI"; cd "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=trellis-test-ca 2>/dev/null
  cat >apiserver.ext <<EXT
subjectAltName=IP:$NODE_IP,IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr \
    -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver-kubelet-client.crt -days 3650 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  local admin node
  admin=$(openssl rand -hex 16); node=$(openssl rand -hex 16)
  printf '%s,admin,admin,"system:masters"\n%s,system:node:%s,kubelet-%s,"system:nodes"\n' "$admin" "$node" "$NODE" "$NODE" >tokens.csv
  kubeconfig "$admin" >"$ADMIN"
  kubeconfig "$node" >"$K8S_DIR/kubelet.kubeconfig"
  cd - >/dev/null
}

kubeconfig() {
  cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: trellis-test
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: user
  user: {token: "$1"}
contexts:
- name: trellis-test
  context: {cluster: trellis-test, user: user}
current-context: trellis-test
KC
}

host_setup() {
  mkdir -p "$RUN"
  if [ ! -f "$RUN/sysctls" ]; then
    for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s" 2>/dev/null || echo)"; done >"$RUN/sysctls"
  fi
  ip addr show dev lo | grep -q "$NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  iptables -C FORWARD -s "$POD_CIDR" ! -o cni0 -j DROP 2>/dev/null || iptables -I FORWARD -s "$POD_CIDR" ! -o cni0 -j DROP
  mkdir -p /etc/cni/net.d
  cat >"$CNI_CONF" <<CNI
{ "cniVersion": "1.0.0", "name": "$CNI_NAME",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}} ] }
CNI
}

start_containerd() {
  cat >"$K8S_DIR/containerd.toml" <<TOML
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
TOML
  daemon containerd containerd --config "$K8S_DIR/containerd.toml"
  wait_for 30 containerd ctr --connect-timeout 1s version
}

import_images() {
  for tarball in "$@"; do
    ctr -n k8s.io images import "$tarball" >/dev/null
    log "imported $tarball"
  done
}

start_control_plane() {
  rm -rf "$STATE"; mkdir -p "$STATE"
  daemon etcd "$(bin etcd)" --name default --data-dir "$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  daemon kube-apiserver "$(bin kube-apiserver)" --etcd-servers=http://127.0.0.1:2379 --bind-address=$NODE_IP \
    --advertise-address=$NODE_IP --secure-port=6443 --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" --token-auth-file="$PKI/tokens.csv" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --service-cluster-ip-range=$SVC_CIDR --allow-privileged=true
  wait_for 180 "the API server" sh -c "'$(bin kubectl)' --kubeconfig '$ADMIN' get --raw /readyz | grep -qx ok"
  daemon kube-controller-manager "$(bin kube-controller-manager)" --kubeconfig="$ADMIN" --authentication-kubeconfig="$ADMIN" \
    --authorization-kubeconfig="$ADMIN" --bind-address=127.0.0.1 --leader-elect=false --controllers='*' \
    --use-service-account-credentials=true --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key"
  daemon kube-scheduler "$(bin kube-scheduler)" --kubeconfig="$ADMIN" --authentication-kubeconfig="$ADMIN" \
    --authorization-kubeconfig="$ADMIN" --bind-address=127.0.0.1 --leader-elect=false
}

start_node() {
  cat >"$K8S_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$ADMIN"}
hostnameOverride: $NODE
mode: iptables
clusterCIDR: "$POD_CIDR"
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  daemon kube-proxy "$(bin kube-proxy)" --config="$K8S_DIR/kube-proxy.yaml"
  cat >"$K8S_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: "$PKI/ca.crt"}}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
failCgroupV1: false
clusterDomain: cluster.local
clusterDNS: ["10.96.0.10"]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Mounted Secrets follow their updates within seconds (a rotated issuer).
syncFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
YAML
  daemon kubelet "$(bin kubelet)" --config="$K8S_DIR/kubelet.yaml" --kubeconfig="$K8S_DIR/kubelet.kubeconfig" \
    --hostname-override=$NODE --node-ip=$NODE_IP --root-dir=/var/lib/kubelet --cert-dir="$STATE/kubelet-pki"
  wait_for 180 "the node to register" kubectl get node $NODE
  wait_for 240 "the node to be Ready" sh -c "'$(bin kubectl)' --kubeconfig '$ADMIN' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for 120 "the node's not-ready taint to go" sh -c "[ -z \"\$('$(bin kubectl)' --kubeconfig '$ADMIN' get node $NODE -o jsonpath='{.spec.taints}')\" ]"
  wait_for 120 "the default ServiceAccount" kubectl get serviceaccount default -n default
}

start() {
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: needs root" >&2; exit 1; }
  if [ -f "$RUN/kube-apiserver.pid" ] && kill -0 "$(cat "$RUN/kube-apiserver.pid")" 2>/dev/null; then
    echo "cluster.sh: a cluster is already running (stop it first: $0 stop)" >&2; exit 1
  fi
  local begin=$SECONDS
  BIN=$("$HERE/build-kubernetes.sh")
  need_packages
  mkdir -p "$K8S_DIR" "$RUN"
  pki
  host_setup
  start_containerd
  local pause=$K8S_DIR/pause.tar coredns=$K8S_DIR/coredns.tar prometheus=$K8S_DIR/prometheus.tar
  (cd "$REPO" && CGO_ENABLED=0 go run ./test/kube/pause -image "$pause" -static "$COREDNS_IMAGE=$BIN/coredns=$coredns" \
    -static "$PROMETHEUS_IMAGE=$BIN/prometheus=$prometheus")
  import_images "$pause" "$coredns" "$prometheus" "$@"
  start_control_plane
  start_node
  start_dns
  log "cluster ready in $((SECONDS - begin)) s (kubeconfig $ADMIN)"
}

# start_dns deploys CoreDNS as Service kube-dns (10.96.0.10, the kubelet's
# clusterDNS): cluster names resolve, nothing else does (no forwarding).
start_dns() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: trellis-test-coredns}
rules:
- {apiGroups: [""], resources: [services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trellis-test-coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-test-coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        loop
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports: [{containerPort: 53, protocol: UDP, name: dns}, {containerPort: 53, protocol: TCP, name: dns-tcp}]
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        volumeMounts: [{name: config, mountPath: /etc/coredns}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
EOF
  kubectl -n kube-system rollout status deployment/coredns --timeout=120s >&2
  log "CoreDNS ready at 10.96.0.10"
}

stop() {
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: needs root" >&2; exit 1; }
  [ -d "$RUN" ] || return 0
  local begin=$SECONDS
  stop_daemon kube-controller-manager
  stop_daemon kube-scheduler
  if [ -f "$RUN/kube-apiserver.pid" ] && [ -f "$ADMIN" ] && [ -x "$BIN/kubectl" ]; then
    kubectl delete pods --all -A --wait=false --grace-period=1 >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do [ -z "$(ctr -n k8s.io tasks ls -q 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop_daemon kubelet
  if command -v ctr >/dev/null && [ -f "$RUN/containerd.pid" ]; then
    for c in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.5
    for c in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do ctr -n k8s.io containers rm "$c" >/dev/null 2>&1 || true; done
  fi
  stop_daemon kube-proxy
  if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  stop_daemon kube-apiserver
  stop_daemon etcd
  stop_daemon containerd
  # Mounts, deepest first, /var/lib/kubelet itself included.
  for m in $(awk '{print $2}' /proc/mounts | grep -E '^(/var/lib/kubelet|/run/containerd|/var/lib/containerd|/run/netns/cni-)' | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do ip netns del "$ns" || true; done
  ip link del cni0 2>/dev/null || true
  rm -rf "/var/lib/cni/networks/$CNI_NAME" /var/lib/cni/results/"$CNI_NAME"-* "$CNI_CONF"
  while iptables -C FORWARD -s "$POD_CIDR" ! -o cni0 -j DROP 2>/dev/null; do iptables -D FORWARD -s "$POD_CIDR" ! -o cni0 -j DROP; done
  for table in filter nat mangle; do
    local chains
    chains=$(iptables -t $table -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}' || true)
    for c in $chains; do
      local jumps
      jumps=$(iptables -t $table -S 2>/dev/null | grep -E -- "-j $c( |$)" | sed 's/^-A/-D/' || true)
      while read -r rule; do
        [ -n "$rule" ] && { eval "iptables -t $table $rule" 2>/dev/null || true; }
      done <<<"$jumps"
    done
    for c in $chains; do iptables -t $table -F "$c" 2>/dev/null || true; done
    for c in $chains; do iptables -t $table -X "$c" 2>/dev/null || true; done
  done
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  for d in $(find /sys/fs/cgroup/*/kubepods -depth -type d 2>/dev/null); do rmdir "$d" 2>/dev/null || true; done
  if [ -f "$RUN/sysctls" ]; then
    while IFS='=' read -r k v; do [ -n "$v" ] && sysctl -qw "$k=$v" 2>/dev/null || true; done <"$RUN/sysctls"
    rm -f "$RUN/sysctls"
  fi
  rm -rf "$STATE" /var/lib/kubelet /var/lib/containerd /run/containerd
  log "stopped and cleaned up in $((SECONDS - begin)) s"
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) stop ;;
  import) shift; import_images "$@" ;;
  kubeconfig) echo "$ADMIN" ;;
  *) echo "usage: $0 start [IMAGE.tar ...] | import IMAGE.tar ... | stop | kubeconfig" >&2; exit 2 ;;
esac
