package kube

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// injectConfig is what `trellis inject` gives Pods for this cluster: the
// control plane by its Services' DNS names.
func injectConfig(t *testing.T, anchors string) inject.Config {
	return inject.Config{
		ProxyImage: proxyImage, ImagePullPolicy: corev1.PullNever, Version: version,
		TrustDomain: "cluster.local", ClusterDomain: "cluster.local", TrustAnchorsPEM: anchors,
		IdentityAddr:    "trellis-identity.trellis.svc.cluster.local:8080",
		DestinationAddr: "trellis-destination.trellis.svc.cluster.local:8086",
	}
}

// applyInjected injects manifest with the injector's patch and applies it.
func applyInjected(t *testing.T, anchors, manifest string) {
	t.Helper()
	var out bytes.Buffer
	res, err := inject.Manifests(strings.NewReader(manifest), &out, injectConfig(t, anchors).Patch)
	if err != nil || res.Changed == 0 {
		t.Fatalf("inject: %v (%d changed)", err, res.Changed)
	}
	kubectl(t, out.String(), "apply", "-f", "-")
}

// A Deployment injected with the proxy runs: the init container programs
// the Pod's interception, the proxy (a native sidecar) obtains its
// ServiceAccount's identity from the identity service with its projected
// token, and only then does the application start.
func TestInjectedPodRunsWithItsIdentity(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	t.Cleanup(func() { diagnose(t, "demo") })
	dropNamespaces(t, "demo")
	applyInjected(t, anchors, `apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers:
      - name: app
        image: localhost/pause:3.10
        imagePullPolicy: Never
`)
	kubectl(t, "", "-n", "demo", "rollout", "status", "deployment/web", "--timeout=90s")
	pods, err := client.CoreV1().Pods("demo").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v, %v", pods, err)
	}
	pod := pods.Items[0]
	logs := kubectl(t, "", "-n", "demo", "logs", pod.Name, "-c", inject.ProxyContainer)
	if !strings.Contains(logs, "identity certificate obtained") || !strings.Contains(logs, "spiffe://cluster.local/ns/demo/sa/web") {
		t.Errorf("the proxy did not report its identity:\n%s", logs)
	}
	// The sidecar was ready before the application started.
	var proxyReady, appStarted time.Time
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == inject.ProxyContainer && s.State.Running != nil {
			proxyReady = s.State.Running.StartedAt.Time
		}
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == "app" && s.State.Running != nil {
			appStarted = s.State.Running.StartedAt.Time
		}
	}
	if proxyReady.IsZero() || appStarted.IsZero() || appStarted.Before(proxyReady) {
		t.Errorf("proxy started %v, application %v: the application must start after the proxy", proxyReady, appStarted)
	}
	// The Pod's own network namespace has the interception rules.
	rules := podIptables(t, pod.Status.PodIP)
	for _, want := range []string{"--uid-owner 2102", "REDIRECT --to-ports 4143", "REDIRECT --to-ports 4140", "--dport 4191"} {
		if !strings.Contains(rules, want) {
			t.Errorf("the Pod's nat rules lack %q:\n%s", want, rules)
		}
	}
}

// podIptables is the nat table of the network namespace holding ip.
func podIptables(t *testing.T, ip string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		ns := strings.Fields(line + " ")
		if len(ns) == 0 || !strings.HasPrefix(ns[0], "cni-") {
			continue
		}
		addrs, _ := exec.Command("ip", "-n", ns[0], "-4", "-o", "addr").Output()
		if strings.Contains(string(addrs), " "+ip+"/") {
			rules, err := exec.Command("ip", "netns", "exec", ns[0], "iptables-nft-save", "-t", "nat").CombinedOutput()
			if err != nil {
				t.Fatalf("iptables-nft-save in %s: %v\n%s", ns[0], err, rules)
			}
			return string(rules)
		}
	}
	t.Fatalf("no network namespace holds %s", ip)
	return ""
}

// A Job's Pod completes with its proxy: the native sidecar is stopped once
// the Job's container is done.
func TestJobCompletesWithItsSidecar(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	t.Cleanup(func() { diagnose(t, "jobs") })
	dropNamespaces(t, "jobs")
	applyInjected(t, anchors, `apiVersion: v1
kind: Namespace
metadata: {name: jobs}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: jobs}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: task
        image: `+proxyImage+`
        imagePullPolicy: Never
        args: [version]
`)
	start := time.Now()
	kubectl(t, "", "-n", "jobs", "wait", "--for=condition=complete", "job/once", "--timeout=180s")
	t.Logf("the meshed Job completed %v after it was applied", time.Since(start).Round(100*time.Millisecond))
}
