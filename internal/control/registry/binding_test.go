package registry

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

const intruder = "spiffe://cluster.local/ns/default/sa/intruder"

// newCountingRegistry is a registry whose refusals can be read back.
func newCountingRegistry(t *testing.T, c *clock) (*Registry, *store.DB) {
	t.Helper()
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	t.Cleanup(func() { db.Close() })
	g := newRegistry(db, c)
	g.cfg.Metrics = prometheus.NewRegistry()
	g.cfg.Metrics.MustRegister(g.refused)
	return g, db
}

func refused(g *Registry, reason string) float64 {
	return testutil.ToFloat64(g.refused.WithLabelValues(reason))
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("%s: %v; want PermissionDenied", what, err)
	}
}

// An identity serves only the services it is bound to: its own by
// default, and those whose Service lists it.
func TestRegisterNeedsTheServiceBinding(t *testing.T) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	g, db := newCountingRegistry(t, c)
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	// The registration that created the service bound it to web.
	svc, _ := db.Get(context.Background(), store.Key{Kind: resources.KindService, Namespace: "default", Name: "web"})
	var spec resources.ServiceSpec
	resources.Decode(svc.Spec, &spec)
	if strings.Join(spec.ServiceAccounts, ",") != "web" {
		t.Fatalf("service bound to %v; want [web]", spec.ServiceAccounts)
	}

	// Another identity joining web under a name of its own is refused.
	_, err := g.Register(as(intruder), request("intruder-0"))
	wantDenied(t, "an unbound identity joining the service", err)
	if exists(t, db, "intruder-0") {
		t.Fatal("the refused workload was stored")
	}
	if n := refused(g, "service"); n != 1 {
		t.Errorf("refusals counted for reason service: %v; want 1", n)
	}

	// Listed in the Service, it may; re-applying the Service without the
	// list keeps the binding.
	spec.ServiceAccounts = []string{"web", "intruder"}
	raw, _ := json.Marshal(spec)
	svc.Spec = raw
	if _, err := g.cfg.IPs.Apply(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Register(as(intruder), request("intruder-0")); err != nil {
		t.Fatalf("a listed identity: %v", err)
	}
	svc, _ = db.Get(context.Background(), store.Key{Kind: resources.KindService, Namespace: "default", Name: "web"})
	svc.Spec = json.RawMessage(`{"ports":[{"port":8080}]}`)
	svc.Metadata.ResourceVersion = ""
	if _, err := g.cfg.IPs.Apply(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	svc, _ = db.Get(context.Background(), store.Key{Kind: resources.KindService, Namespace: "default", Name: "web"})
	if !strings.Contains(string(svc.Spec), `"serviceAccounts":["web","intruder"]`) {
		t.Errorf("re-applied without serviceAccounts: %s", svc.Spec)
	}
}

// A workload registers only the address it connects from; a loopback
// address (explicit mode) only from this host.
func TestRegisterFromItsOwnAddress(t *testing.T) {
	g, db := newCountingRegistry(t, &clock{now: time.Unix(1_000_000, 0)})
	elsewhere := request("web-0")
	elsewhere.Address = "10.0.0.2"
	_, err := g.Register(as(web), elsewhere)
	wantDenied(t, "registering another address", err)
	if exists(t, db, "web-0") {
		t.Fatal("the refused workload was stored")
	}
	loop := request("web-1")
	loop.Address = "127.0.0.1"
	_, err = g.Register(asFrom(web, "10.0.0.7"), loop)
	wantDenied(t, "registering loopback from another host", err)
	for i, from := range []string{"127.0.0.1", "10.0.0.254"} { // loopback, or the host's own address
		loop.Name, loop.MeshPort = "web-local-"+string(rune('a'+i)), uint32(5000+i)
		if _, err := g.Register(asFrom(web, from), loop); err != nil {
			t.Errorf("loopback registered from %s: %v", from, err)
		}
	}
	if n := refused(g, "address"); n != 2 {
		t.Errorf("refusals counted for reason address: %v; want 2", n)
	}
}

// A live instance cannot be re-pointed elsewhere, even by its own identity
// (a stolen token): only once its lease lapsed.
func TestLiveInstanceIsNotRepointed(t *testing.T) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	g, _ := newCountingRegistry(t, c)
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	moved := request("web-0")
	moved.Address = "10.0.0.9"
	_, err := g.Register(asFrom(web, "10.0.0.9"), moved)
	wantDenied(t, "re-pointing a live instance", err)
	// The same endpoint registering again (a proxy reconnecting) is fine,
	// also after renewals.
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatalf("re-registering the same endpoint: %v", err)
	}
	if _, err := g.Renew(as(web), &destinationv1.RenewRequest{Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatalf("re-registering the same endpoint after a renewal: %v", err)
	}
	_, err = g.Register(asFrom(web, "10.0.0.9"), moved)
	wantDenied(t, "re-pointing a live instance after a renewal", err)
	c.Advance(4 * time.Second)
	if _, err := g.Register(asFrom(web, "10.0.0.9"), moved); err != nil {
		t.Fatalf("after the lease lapsed: %v", err)
	}
}

// Registration never takes over or removes a workload applied by hand.
func TestLeasesNeverTouchStaticWorkloads(t *testing.T) {
	g, db := newCountingRegistry(t, &clock{now: time.Unix(1_000_000, 0)})
	spec, _ := json.Marshal(resources.WorkloadSpec{Service: "web", Identity: web, Address: "10.0.0.50", MeshPort: 4143,
		Ports: []resources.WorkloadPort{{Port: 8080, TargetPort: 8080}}})
	static := store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload, Spec: spec,
		Metadata: store.Metadata{Name: "web-0", Namespace: "default"}}
	if _, err := db.Apply(context.Background(), static); err != nil {
		t.Fatal(err)
	}
	_, err := g.Register(as(web), request("web-0"))
	wantDenied(t, "registering over a static workload", err)
	_, err = g.Deregister(as(web), &destinationv1.DeregisterRequest{Name: "web-0"})
	wantDenied(t, "deregistering a static workload", err)
	cur, err := db.Get(context.Background(), store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: "web-0"})
	if err != nil || !strings.Contains(string(cur.Spec), "10.0.0.50") {
		t.Fatalf("the static workload changed: %s, %v", cur.Spec, err)
	}
}
