package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// webhookCert is a CA and the serving certificate it signs for the
// injector's Service name, both PEM.
func webhookCert(t *testing.T) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trellis-injector-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "trellis-injector.trellis.svc"},
		DNSNames: []string{"trellis-injector.trellis.svc"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	enc := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return enc("CERTIFICATE", caDER), enc("CERTIFICATE", der), enc("EC PRIVATE KEY", kd)
}

// The injector, running in the cluster as the API server's mutating
// webhook, meshes the Pods of an annotated namespace, leaves other
// namespaces alone, and refuses a Pod with an invalid annotation, naming it.
func TestInjectorWebhookMeshesAnnotatedNamespaces(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	t.Cleanup(func() { diagnose(t, "trellis"); diagnose(t, "auto") })
	cfg := injectConfig(t, anchors)
	ca, cert, key := webhookCert(t)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	kubectl(t, `apiVersion: v1
kind: ServiceAccount
metadata: {name: trellis-injector, namespace: trellis}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: trellis-injector}
rules:
- {apiGroups: [""], resources: [namespaces], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trellis-injector}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-injector}
subjects: [{kind: ServiceAccount, name: trellis-injector, namespace: trellis}]
---
apiVersion: v1
kind: Secret
metadata: {name: trellis-injector-tls, namespace: trellis}
type: kubernetes.io/tls
data: {tls.crt: `+b64(cert)+`, tls.key: `+b64(key)+`}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: trellis-trust-anchors, namespace: trellis}
data:
  ca.crt: |
`+indent(anchors, "    ")+`
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: trellis-injector, namespace: trellis}
spec:
  selector: {matchLabels: {app: trellis-injector}}
  template:
    metadata: {labels: {app: trellis-injector}}
    spec:
      serviceAccountName: trellis-injector
      containers:
      - name: injector
        image: localhost/trellis-control:`+version+`
        imagePullPolicy: Never
        args: [injector, --tls-cert-file=/etc/tls/tls.crt, --tls-key-file=/etc/tls/tls.key, --trust-anchors=/etc/anchors/ca.crt,
               "--proxy-image=`+proxyImage+`", --proxy-image-pull-policy=Never,
               "--identity-addr=`+cfg.IdentityAddr+`", "--destination-addr=`+cfg.DestinationAddr+`"]
        ports: [{containerPort: 8443}]
        readinessProbe: {httpGet: {path: /ready, port: 9995}, periodSeconds: 1}
        securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: tls, mountPath: /etc/tls, readOnly: true}, {name: anchors, mountPath: /etc/anchors, readOnly: true}]
      volumes:
      - {name: tls, secret: {secretName: trellis-injector-tls}}
      - {name: anchors, configMap: {name: trellis-trust-anchors}}
---
apiVersion: v1
kind: Service
metadata: {name: trellis-injector, namespace: trellis}
spec:
  selector: {app: trellis-injector}
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: trellis-proxy-injector}
webhooks:
- name: injector.trellis.dev
  clientConfig:
    service: {namespace: trellis, name: trellis-injector, path: /mutate, port: 443}
    caBundle: `+b64(ca)+`
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}]
  namespaceSelector:
    matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, trellis]}]
  failurePolicy: Ignore
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
`, "apply", "-f", "-")
	kubectl(t, "", "-n", "trellis", "rollout", "status", "deployment/trellis-injector", "--timeout=120s")
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

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}
