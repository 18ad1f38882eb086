package cli

import (
	"regexp"
	"strings"
	"testing"
)

// policyManifest is Linkerd's "only web may call emoji" example in
// Trellis's group.
const policyManifest = `apiVersion: policy.trellis.dev/v1alpha1
kind: Server
metadata: {name: emoji-grpc, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: emoji}}
  port: 8080
  proxyProtocol: gRPC
---
apiVersion: policy.trellis.dev/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web-only, namespace: emojivoto}
spec:
  identities: [spiffe://cluster.local/ns/emojivoto/sa/web]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: emoji-from-web, namespace: emojivoto}
spec:
  targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-grpc}
  requiredAuthenticationRefs:
  - {group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web-only}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: emoji-limit, namespace: emojivoto}
spec:
  targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-grpc}
  identity: {requestsPerSecond: 20}
`

// Policy resources apply as a batch and list; a bad one, or one that
// overlaps a Server already applied, is refused naming the field, and
// nothing of its batch is written.
func TestApplyPolicies(t *testing.T) {
	dir := startUp(t)
	out, err := execute("--data-dir", dir, "apply", "-f", writeFile(t, policyManifest))
	if err != nil || strings.Count(out, " created\n") != 4 {
		t.Fatalf("apply: %q, %v", out, err)
	}
	out, err = execute("--data-dir", dir, "get", "servers", "-n", "emojivoto")
	if err != nil || !strings.Contains(out, "PROXY-PROTOCOL") || !regexpMatch(`emoji-grpc\s+8080\s+gRPC\s+deny\s+app=emoji`, out) {
		t.Fatalf("get servers:\n%s%v", out, err)
	}
	if out, err = execute("--data-dir", dir, "get", "authorizationpolicies", "-A"); err != nil || !strings.Contains(out, "emoji-from-web") {
		t.Fatalf("get authorizationpolicies:\n%s%v", out, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{strings.Replace(policyManifest, "proxyProtocol: gRPC", "proxyProtocol: grpc", 1), `spec.proxyProtocol: "grpc": must be one of`},
		{"apiVersion: policy.trellis.dev/v1alpha1\nkind: Server\nmetadata: {name: everything, namespace: emojivoto}\nspec: {podSelector: {}, port: 8080}\n",
			`Server/emojivoto/everything: spec.podSelector: may select workloads that Server "emoji-grpc" selects for port 8080 too`},
	} {
		batch := "apiVersion: policy.trellis.dev/v1alpha1\nkind: EgressNetwork\nmetadata: {name: internet, namespace: emojivoto}\nspec: {trafficPolicy: Deny}\n---\n" + tc.doc
		if _, err := execute("--data-dir", dir, "apply", "-f", writeFile(t, batch)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v; want one with %q", err, tc.want)
		}
		if out, err := execute("--data-dir", dir, "get", "egressnetworks", "-A"); err != nil || !strings.HasPrefix(out, "no egressnetworks") {
			t.Errorf("after a refused batch: %q, %v", out, err)
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// authz shows a workload's Servers, their policies and rate limits, as
// the control plane compiles them for its proxies.
func TestAuthzShowsAWorkloadsPolicy(t *testing.T) {
	dir := startUp(t)
	workload := "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {name: emoji-0, namespace: emojivoto, labels: {app: emoji, trellis.dev/workload: emoji}}\n" +
		"spec: {service: emoji, address: 10.0.0.5, ports: [{port: 8080, targetPort: 8080}]}\n"
	if out, err := execute("--data-dir", dir, "apply", "-f", writeFile(t, workload+"---\n"+policyManifest)); err != nil {
		t.Fatalf("apply: %q, %v", out, err)
	}
	out, err := execute("--data-dir", dir, "authz", "emoji", "-n", "emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SERVER", "emoji-grpc", "8080", "deny", "emoji-limit (total -, per identity 20/s)", "emoji-from-web",
		"MeshTLSAuthentication/web-only(spiffe://cluster.local/ns/emojivoto/sa/web)"} {
		if !strings.Contains(out, want) {
			t.Errorf("authz output lacks %q:\n%s", want, out)
		}
	}
	if _, err := execute("--data-dir", dir, "authz", "nobody", "-n", "emojivoto"); err == nil || !strings.Contains(err.Error(), `no workload "nobody"`) {
		t.Errorf("authz of an unknown workload: %v", err)
	}
}
