package kube

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// The injector, installed by `trellis install` as the API server's mutating
// webhook, meshes the Pods of an annotated namespace, leaves other
// namespaces alone, and refuses a Pod with an invalid annotation, naming it.
func TestInjectorWebhookMeshesAnnotatedNamespaces(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "trellis"); diagnose(t, "auto") })
	dropNamespaces(t, "auto", "plain")
	kubectl(t, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: auto\n  annotations: {trellis.dev/inject: enabled}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n", "apply", "-f", "-")
	pod := func(ns, name, annotations string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n  annotations: {" + annotations + "}\nspec:\n  containers:\n  - {name: app, image: localhost/pause:3.10, imagePullPolicy: Never}\n"
	}
	// The API server reaches the webhook once kube-proxy has programmed
	// its Service; until then (failurePolicy Ignore) Pods pass unmeshed.
	// A server-side dry run shows when it answers.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(dryRun(t, pod("auto", "probe", "")), inject.ProxyContainer) {
		if time.Now().After(deadline) {
			t.Fatal("the API server never applied the injector's patch to a dry-run Pod")
		}
		time.Sleep(500 * time.Millisecond)
	}

	kubectl(t, pod("auto", "meshed", "")+"---\n"+pod("plain", "unmeshed", ""), "apply", "-f", "-")
	kubectl(t, "", "-n", "auto", "wait", "--for=condition=Ready", "pod/meshed", "--timeout=120s")
	meshed, err := client.CoreV1().Pods("auto").Get(context.Background(), "meshed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !inject.Injected(meshed) || meshed.Annotations[inject.AnnotationProxyVersion] != version {
		t.Errorf("the Pod in the annotated namespace was not injected: %+v", meshed.Spec.InitContainers)
	}
	if logs := kubectl(t, "", "-n", "auto", "logs", "meshed", "-c", inject.ProxyContainer); !strings.Contains(logs, "spiffe://cluster.local/ns/auto/sa/default") {
		t.Errorf("the injected proxy has no identity:\n%s", logs)
	}
	unmeshed, err := client.CoreV1().Pods("plain").Get(context.Background(), "unmeshed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if inject.Injected(unmeshed) {
		t.Error("a Pod of a namespace that did not ask was injected")
	}
	// An opt-out Pod in the annotated namespace stays as it is.
	if out := dryRun(t, pod("auto", "optout", "trellis.dev/inject: disabled")); strings.Contains(out, inject.ProxyContainer) {
		t.Errorf("a Pod that opted out was injected:\n%s", out)
	}
	// A bad annotation is refused with its name.
	cmd := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(pod("auto", "bad", "config.trellis.dev/proxy-log-level: loud"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "config.trellis.dev/proxy-log-level") {
		t.Errorf("a Pod with an invalid annotation: %v\n%s", err, out)
	}
}

// dryRun creates manifest on the server without persisting it (webhooks
// run) and returns the object as the server would have stored it.
func dryRun(t *testing.T, manifest string) string {
	cmd := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "create", "--dry-run=server", "-o", "yaml", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, _ := cmd.CombinedOutput()
	return string(out)
}
