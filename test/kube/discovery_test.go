package kube

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// Deleting a Pod takes its endpoint out of discovery within 2 s: a
// destination stream, held as a proxy holds one (over mTLS with a
// ServiceAccount's identity), sees it go.
func TestDeletedPodLeavesDiscoveryWithin2s(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	t.Cleanup(func() { diagnose(t, "discovery") })
	dropNamespaces(t, "discovery")
	kubectl(t, `apiVersion: v1
kind: Namespace
metadata: {name: discovery}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: discovery}
spec:
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: discovery}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: app, image: localhost/pause:3.10, imagePullPolicy: Never}
`, "apply", "-f", "-")
	kubectl(t, "", "-n", "discovery", "rollout", "status", "deployment/web", "--timeout=120s")

	id := "spiffe://cluster.local/ns/discovery/sa/default"
	resp, key, err := certifyKey(t, anchors, id, serviceAccountToken(t, "discovery", "default", meshid.TokenAudience))
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: append([][]byte{resp.GetLeafCertificate()}, resp.GetIntermediateCertificates()...), PrivateKey: key}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := controlPlaneConn(t, anchors, "trellis-destination", 8086, cert)
	// A meshed identity cannot add itself to a Service: in Kubernetes the
	// EndpointSlices say who serves one, and nothing is registered.
	if _, err := destinationv1.NewRegistryClient(conn).Register(ctx, &destinationv1.RegisterRequest{Name: "intruder", Service: "web",
		Address: "10.244.0.250", MeshPort: 4143, Ports: []*destinationv1.Port{{Port: 8080, TargetPort: 8080}}}); status.Code(err) != codes.Unimplemented {
		t.Errorf("registering a workload under web: %v, want Unimplemented", err)
	}
	// Without a certificate of the mesh, discovery answers nothing.
	if s, err := destinationv1.NewDestinationClient(controlPlaneConn(t, anchors, "trellis-destination", 8086, nil)).Get(ctx,
		&destinationv1.GetDestination{Authority: "web.discovery.svc.cluster.local:8080"}); err == nil {
		if _, err = s.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Errorf("discovery without a client certificate: %v, want Unauthenticated", err)
		}
	}
	stream, err := destinationv1.NewDestinationClient(conn).Get(ctx,
		&destinationv1.GetDestination{Authority: "web.discovery.svc.cluster.local:8080", ContextNamespace: "discovery"})
	if err != nil {
		t.Fatal(err)
	}
	endpoints := map[string]bool{}
	recv := func() {
		u, err := stream.Recv()
		if err != nil {
			t.Fatalf("destination stream: %v (endpoints %v)", err, endpoints)
		}
		for _, ep := range u.GetAdd().GetEndpoints() {
			endpoints[ep.GetAddress()] = true
		}
		for _, a := range u.GetRemove().GetAddresses() {
			delete(endpoints, a)
		}
		if u.GetNoEndpoints() != nil {
			clear(endpoints)
		}
	}
	for len(endpoints) < 3 {
		recv()
	}
	pods, err := client.CoreV1().Pods("discovery").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods: %v", err)
	}
	victim := pods.Items[0]
	addr := victim.Status.PodIP + ":8080"
	if !endpoints[addr] {
		t.Fatalf("discovery lists %v, not %s", endpoints, addr)
	}
	start := time.Now()
	if err := client.CoreV1().Pods("discovery").Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for endpoints[addr] {
		recv()
	}
	took := time.Since(start)
	t.Logf("the deleted Pod's endpoint left discovery %v after the delete call (left: %s)", took.Round(time.Millisecond), strings.Join(keys(endpoints), ", "))
	if took > 2*time.Second {
		t.Errorf("the deleted Pod stayed in discovery for %v", took)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
