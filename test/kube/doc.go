// Package kube holds Trellis's end-to-end tests on a real single-node
// Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy and a kubelet running real Pods through
// containerd and runc (cluster.sh), with binaries built from the Go module
// proxy into a cache (build-kubernetes.sh) and Trellis's images built by
// `go run ./build/images` and imported into containerd.
//
// TestMain builds what is missing, starts the cluster, runs the tests and
// stops it, leaving nothing running (unless TRELLIS_KUBE_KEEP is set, to
// look at it afterwards: KUBECONFIG=$(test/kube/cluster.sh kubeconfig)). It needs root; without root, or with
// TRELLIS_KUBE_E2E=off, the tests are skipped with the reason.
package kube
