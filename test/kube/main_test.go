package kube

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

var (
	// skipReason is why the cluster could not be had; tests skip with it.
	skipReason string
	kubectlBin string
	kubeconfig string
	clusterDir string // the cluster's state: PKI, logs
	client     kubernetes.Interface
	proxyImage string
	trellisBin string // the CLI, built from the repository
	version    = "v0.0.0-e2e"
)

// prometheusImage is the Prometheus cluster.sh imports (PROMETHEUS_IMAGE).
const prometheusImage = "localhost/prometheus:v3.16.0"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	switch {
	case os.Getenv("TRELLIS_KUBE_E2E") == "off":
		skipReason = "TRELLIS_KUBE_E2E=off"
	case os.Geteuid() != 0:
		skipReason = "the test cluster needs root"
	}
	if skipReason != "" {
		return m.Run()
	}
	unlock, err := testkit.LockHost() // the local-mode e2e tests check the host's iptables
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube e2e:", err)
		return 1
	}
	defer unlock()
	repo, _ := filepath.Abs("../..")
	say := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "kube e2e: "+format+"\n", args...) }
	start := time.Now()
	out, err := script(repo, "test/kube/build-kubernetes.sh")
	if err != nil {
		say("building Kubernetes: %v", err)
		return 1
	}
	kubectlBin = filepath.Join(strings.TrimSpace(out), "kubectl")
	say("Kubernetes binaries ready (%v)", time.Since(start).Round(time.Second))
	images, err := os.MkdirTemp("", "trellis-images-")
	if err != nil {
		say("%v", err)
		return 1
	}
	defer os.RemoveAll(images)
	if _, err := command(repo, "go", "run", "./build/images", "-o", images, "-version", version); err != nil {
		say("building images: %v", err)
		return 1
	}
	proxyImage = "localhost/trellis-proxy:" + version
	trellisBin = filepath.Join(images, "trellis")
	if _, err := command(repo, "go", "build", "-ldflags", "-X github.com/trellis-mesh/trellis/internal/buildinfo.Version="+version, "-o", trellisBin, "./cmd/trellis"); err != nil {
		say("building the CLI: %v", err)
		return 1
	}
	// Stop whatever a killed run left, then start afresh.
	script(repo, "test/kube/cluster.sh", "stop")
	started := time.Now()
	if _, err := script(repo, "test/kube/cluster.sh", "start", filepath.Join(images, "trellis-proxy.tar"), filepath.Join(images, "trellis-control.tar"),
		filepath.Join(images, "trellis.tar")); err != nil {
		say("starting the cluster: %v", err)
		script(repo, "test/kube/cluster.sh", "stop")
		return 1
	}
	say("cluster started in %v", time.Since(started).Round(time.Second))
	defer func() {
		if os.Getenv("TRELLIS_KUBE_KEEP") != "" {
			say("TRELLIS_KUBE_KEEP is set: the cluster keeps running (test/kube/cluster.sh stop)")
			return
		}
		if _, err := script(repo, "test/kube/cluster.sh", "stop"); err != nil {
			say("stopping the cluster: %v", err)
		}
	}()
	out, _ = script(repo, "test/kube/cluster.sh", "kubeconfig")
	kubeconfig = strings.TrimSpace(out)
	clusterDir = filepath.Dir(kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		say("%v", err)
		return 1
	}
	if client, err = kubernetes.NewForConfig(cfg); err != nil {
		say("%v", err)
		return 1
	}
	return m.Run()
}

// script runs a repository script, its progress on stderr.
func script(repo, path string, args ...string) (string, error) {
	return command(repo, filepath.Join(repo, path), args...)
}

func command(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	return string(out), err
}

// needCluster skips t when there is no cluster, saying why.
func needCluster(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// kubectl runs kubectl against the test cluster, with stdin.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dropNamespaces deletes the test's namespaces when it ends, unless it
// failed (diagnose shows them; the cluster goes at the end anyway): the
// single node's CPU is shared by every test's Pods.
func dropNamespaces(t *testing.T, namespaces ...string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		for _, ns := range namespaces {
			kubectl(t, "", "delete", "namespace", ns, "--wait=false")
		}
	})
}

// diagnose logs what a failed test needs to see of namespace ns: its Pods,
// their events and every container's log.
func diagnose(t *testing.T, ns string) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for _, args := range [][]string{{"get", "pods", "-o", "wide"}, {"describe", "pods"}, {"logs", "--all-containers", "--prefix", "--tail=40", "-l", "trellis.dev/any!=x"}} {
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...)...)
		out, _ := cmd.CombinedOutput()
		t.Logf("kubectl -n %s %s:\n%s", ns, strings.Join(args, " "), out)
	}
}
