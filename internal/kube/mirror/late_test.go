package mirror

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// Routes are mirrored once the API server serves their kinds, though it
// did not when the mirror started (the CRDs installed after Trellis).
func TestRoutesMirroredOnceTheCRDsAreInstalled(t *testing.T) {
	defer func(d time.Duration) { RouteCheckInterval = d }(RouteCheckInterval)
	RouteCheckInterval = 20 * time.Millisecond
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.50", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	client := fake.NewClientset(svc)
	var installed atomic.Bool
	disco := client.Discovery().(*fakediscovery.FakeDiscovery)
	disco.Resources = []*metav1.APIResourceList{{GroupVersion: gwapiv1.GroupVersion.String(),
		APIResources: []metav1.APIResource{{Name: "httproutes", Kind: "HTTPRoute"}, {Name: "grpcroutes", Kind: "GRPCRoute"}}}}
	disco.PrependReactor("get", "resource", func(clienttesting.Action) (bool, runtime.Object, error) {
		if !installed.Load() {
			return true, nil, &fakeNotFound{}
		}
		return false, nil, nil
	})
	kind, group := gwapiv1.Kind("Service"), gwapiv1.Group("")
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "canary", Namespace: "shop"},
		Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Kind: &kind, Group: &group, Name: "web"}}}}}
	gw := gwfake.NewClientset(route)

	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	m := &Mirror{Client: client, Gateway: gw, TrustDomain: "cluster.local", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { done <- m.Run(ctx, st) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	mirrored := func(key store.Key, within time.Duration) bool {
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err := st.Get(ctx, key); err == nil {
				return true
			}
		}
		return false
	}
	key := store.Key{Kind: resources.KindHTTPRoute, Namespace: "shop", Name: "canary"}
	if !mirrored(store.Key{Kind: resources.KindService, Namespace: "shop", Name: "web"}, 5*time.Second) {
		t.Fatal("the Service was not mirrored")
	}
	if mirrored(key, 10*RouteCheckInterval) {
		t.Fatal("a route was mirrored before the API server served routes")
	}
	installed.Store(true)
	if !mirrored(key, 5*time.Second) {
		t.Fatal("the route was not mirrored after the API server started serving routes")
	}
}

type fakeNotFound struct{}

func (*fakeNotFound) Error() string { return "the server could not find the requested resource" }
