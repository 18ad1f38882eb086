package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

func pod(name, ip, sa string, meshed bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"pod-template-hash": "abc"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{PodIP: ip}}
	if meshed {
		p.Spec.InitContainers = []corev1.Container{{Name: inject.ProxyContainer}}
	}
	return p
}

func endpoint(ip, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod}}
}

// The store gets what the proxies need: a Service per Kubernetes Service,
// with its ClusterIP and ports, and a Workload per ready endpoint with its
// target port (named ports resolved by the EndpointSlice) and, when its
// Pod runs the proxy, its ServiceAccount's identity and the mesh port;
// unready endpoints are left out.
func TestDesired(t *testing.T) {
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.50", Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr.To("http")}}}}
	legacy := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.51", Ports: []corev1.ServicePort{{Port: 80}}}}
	slice := func(svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To(map[string]string{"web": "http", "legacy": ""}[svc]), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	}
	l := listers{
		services: func(labels.Selector) ([]*corev1.Service, error) { return []*corev1.Service{web, legacy}, nil },
		slices: func(labels.Selector) ([]*discoveryv1.EndpointSlice, error) {
			return []*discoveryv1.EndpointSlice{
				slice("web", endpoint("10.244.0.5", "web-abc-1", true), endpoint("10.244.0.6", "web-abc-2", false), endpoint("10.244.0.7", "web-abc-3", true)),
				slice("legacy", endpoint("10.244.0.9", "legacy-0", true)),
			}, nil
		},
		pods: func(labels.Selector) ([]*corev1.Pod, error) {
			// A finished meshed Job's Pod still shows legacy-0's IP: it
			// must not lend the endpoint its identity.
			done := pod("job-1", "10.244.0.9", "batch", true)
			done.Status.Phase = corev1.PodSucceeded
			return []*corev1.Pod{pod("web-abc-1", "10.244.0.5", "web", true), pod("web-abc-2", "10.244.0.6", "web", true),
				pod("web-abc-3", "10.244.0.7", "", false), done, pod("legacy-0", "10.244.0.9", "", false)}, nil
		},
	}
	m := &Mirror{TrustDomain: "cluster.local", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	got, err := m.desired(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("desired %d objects: %v; want two Services and three ready endpoints", len(got), got)
	}
	svc, ok := got[store.Key{Kind: resources.KindService, Namespace: "shop", Name: "web"}]
	if !ok {
		t.Fatal("no Service web")
	}
	var spec resources.ServiceSpec
	json.Unmarshal(svc.Spec, &spec)
	if spec.ClusterIP != "10.96.0.50" || len(spec.Ports) != 1 || spec.Ports[0].Port != 80 || spec.Ports[0].Protocol != "http" {
		t.Errorf("service %s", svc.Spec)
	}
	w, ok := got[store.Key{Kind: resources.KindWorkload, Namespace: "shop", Name: "web-abc-1.web"}]
	if !ok {
		t.Fatalf("no Workload for web-abc-1: %v", got)
	}
	var ws resources.WorkloadSpec
	json.Unmarshal(w.Spec, &ws)
	if ws.Identity != "spiffe://cluster.local/ns/shop/sa/web" || ws.Address != "10.244.0.5" || ws.MeshPort != inject.InboundPort ||
		len(ws.Ports) != 1 || ws.Ports[0].Port != 80 || ws.Ports[0].TargetPort != 8080 || w.Metadata.Labels[resources.WorkloadLabel] != "web" {
		t.Errorf("workload %s %v", w.Spec, w.Metadata.Labels)
	}
	for name, wantID := range map[string]string{"web-abc-3.web": "", "legacy-0.legacy": ""} {
		w, ok := got[store.Key{Kind: resources.KindWorkload, Namespace: "shop", Name: name}]
		json.Unmarshal(w.Spec, &ws)
		if !ok || ws.Identity != wantID || ws.MeshPort != 0 {
			t.Errorf("unmeshed endpoint %s: %s (%v)", name, w.Spec, ok)
		}
	}
	if _, ok := got[store.Key{Kind: resources.KindWorkload, Namespace: "shop", Name: "web-abc-2.web"}]; ok {
		t.Error("an unready endpoint was mirrored")
	}
	for _, obj := range got {
		if err := (resources.Kinds{}).Check(&obj); err != nil {
			t.Errorf("%s %s is not valid for the store: %v", obj.Kind, obj.Metadata.Name, err)
		}
	}
}

// Reconciling writes what the cluster implies, removes only what the
// mirror wrote, and never replaces an object applied by hand.
func TestReconcileKeepsWhatItDidNotWrite(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	byHand := store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService, Spec: json.RawMessage(`{"ports":[{"port":9}],"clusterIP":"10.240.0.1"}`),
		Metadata: store.Metadata{Name: "web", Namespace: "shop"}}
	stale := object(resources.KindService, "shop", "gone", nil, resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 80}}})
	for _, r := range []store.Resource{byHand, stale} {
		if _, err := st.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.50", Ports: []corev1.ServicePort{{Port: 80}}}}
	api := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.51", Ports: []corev1.ServicePort{{Port: 80}}}}
	l := listers{
		services: func(labels.Selector) ([]*corev1.Service, error) { return []*corev1.Service{svc, api}, nil },
		slices:   func(labels.Selector) ([]*discoveryv1.EndpointSlice, error) { return nil, nil },
		pods:     func(labels.Selector) ([]*corev1.Pod, error) { return nil, nil },
	}
	m := &Mirror{TrustDomain: "cluster.local", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.reconcile(ctx, st, l); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, store.Key{Kind: resources.KindService, Namespace: "shop", Name: "web"}); !strings.Contains(string(got.Spec), `"port":9`) {
		t.Errorf("the hand-applied Service was replaced: %s", got.Spec)
	}
	if _, err := st.Get(ctx, store.Key{Kind: resources.KindService, Namespace: "shop", Name: "api"}); err != nil {
		t.Errorf("api was not mirrored: %v", err)
	}
	if _, err := st.Get(ctx, store.Key{Kind: resources.KindService, Namespace: "shop", Name: "gone"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a Service the cluster no longer has is still mirrored: %v", err)
	}
}
