package registry

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// A Service a registration created is collected once it has had no
// workload for the GC delay, and its virtual IP is handed out again; one
// applied by hand stays, and so does a created one that is served again.
func TestUnusedCreatedServicesAreCollected(t *testing.T) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	g := newRegistry(db, c)
	ctx := context.Background()
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	byHand := store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService, Metadata: store.Metadata{Name: "db", Namespace: "default"},
		Spec: json.RawMessage(`{"ports":[{"port":5432}]}`)}
	if _, err := g.cfg.IPs.Apply(ctx, byHand); err != nil {
		t.Fatal(err)
	}
	svcKey := store.Key{Kind: resources.KindService, Namespace: "default", Name: "web"}
	ipOf := func(k store.Key) string {
		t.Helper()
		r, err := db.Get(ctx, k)
		if err != nil {
			return ""
		}
		var spec resources.ServiceSpec
		json.Unmarshal(r.Spec, &spec)
		return spec.ClusterIP
	}
	webIP := ipOf(svcKey)
	collect := func(after time.Duration) {
		t.Helper()
		c.Advance(after)
		g.mu.Lock()
		defer g.mu.Unlock()
		if err := g.collect(ctx); err != nil {
			t.Fatal(err)
		}
	}
	collect(0)
	collect(time.Hour)
	if ipOf(svcKey) == "" {
		t.Fatal("a served Service was collected")
	}
	if _, err := g.Deregister(as(web), &destinationv1.DeregisterRequest{Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	collect(0)
	collect(DefaultServiceGC - time.Second)
	if ipOf(svcKey) == "" {
		t.Fatal("collected before the GC delay")
	}
	// Served again within the delay: the clock starts over.
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	collect(2 * time.Second)
	if _, err := g.Deregister(as(web), &destinationv1.DeregisterRequest{Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	collect(0)
	collect(DefaultServiceGC - time.Second)
	if ipOf(svcKey) == "" {
		t.Fatal("collected before the GC delay after being served again")
	}
	collect(2 * time.Second)
	if ipOf(svcKey) != "" {
		t.Fatal("an unused created Service was not collected")
	}
	if ipOf(store.Key{Kind: resources.KindService, Namespace: "default", Name: "db"}) == "" {
		t.Fatal("a Service applied by hand was collected")
	}
	// Its address is free again.
	other := request("api-0")
	other.Service = "api"
	if _, err := g.Register(as(web), other); err != nil {
		t.Fatal(err)
	}
	if got := ipOf(store.Key{Kind: resources.KindService, Namespace: "default", Name: "api"}); got != webIP {
		t.Errorf("the next service got %s, not the freed %s", got, webIP)
	}
}
