package destination

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness is a real store, index and Destination server on loopback.
type harness struct {
	store  *store.DB
	index  *Index
	client destinationv1.DestinationClient
}

func start(t *testing.T, queue int) *harness {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ix := NewIndex(db, "cluster.local", queue, discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ix.Run(ctx); close(done) }()
	srv := grpc.NewServer()
	NewServer(ix).Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); srv.Stop(); cancel(); <-done })
	return &harness{store: db, index: ix, client: destinationv1.NewDestinationClient(conn)}
}

func (h *harness) apply(t *testing.T, kind, ns, name string, spec any, labels map[string]string) {
	t.Helper()
	raw, _ := json.Marshal(spec)
	_, err := h.store.Apply(context.Background(), store.Resource{APIVersion: resources.APIVersion, Kind: kind,
		Metadata: store.Metadata{Name: name, Namespace: ns, Labels: labels}, Spec: raw})
	if err != nil {
		t.Fatal(err)
	}
}

func (h *harness) workload(t *testing.T, name, addr string, port, target int) {
	h.apply(t, resources.KindWorkload, "default", name, resources.WorkloadSpec{Service: "web", Identity: "spiffe://cluster.local/ns/default/sa/web",
		Address: addr, Ports: []resources.WorkloadPort{{Port: port, TargetPort: target}}, MeshPort: 4143}, map[string]string{resources.WorkloadLabel: "web"})
}

func recv(t *testing.T, s grpc.ServerStreamingClient[destinationv1.Update]) *destinationv1.Update {
	t.Helper()
	c := make(chan *destinationv1.Update, 1)
	go func() {
		u, err := s.Recv()
		if err != nil {
			t.Error(err)
		}
		c <- u
	}()
	select {
	case u := <-c:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5s")
		return nil
	}
}

func TestGetStreamsTheSetThenChanges(t *testing.T) {
	h := start(t, DefaultQueue)
	ctx := context.Background()
	stream, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "web:8080", ContextNamespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, stream); u.GetNoEndpoints() == nil || u.GetNoEndpoints().Exists {
		t.Fatalf("first update for an unknown service: %v; want NoEndpoints{exists: false}", u)
	}
	h.apply(t, resources.KindService, "default", "web", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 8080}}, ClusterIP: "10.240.0.9"}, nil)
	if u := recv(t, stream); u.GetNoEndpoints() == nil || !u.GetNoEndpoints().Exists {
		t.Fatalf("after the service appears: %v; want NoEndpoints{exists: true}", u)
	}
	h.workload(t, "web-0", "10.0.0.1", 8080, 18080)
	add := recv(t, stream).GetAdd()
	if add == nil || len(add.Endpoints) != 1 {
		t.Fatalf("want one added endpoint, got %v", add)
	}
	ep := add.Endpoints[0]
	if ep.Address != "10.0.0.1:18080" || ep.Identity != "spiffe://cluster.local/ns/default/sa/web" || ep.MeshPort != 4143 ||
		ep.ProtocolHint != destinationv1.ProtocolHint_PROTOCOL_HINT_H2 || ep.MetricLabels["dst_instance"] != "web-0" || ep.MetricLabels["dst_workload"] != "web" {
		t.Errorf("endpoint %v", ep)
	}
	if add.MetricLabels["dst_service"] != "web" || add.MetricLabels["dst_namespace"] != "default" {
		t.Errorf("set labels %v", add.MetricLabels)
	}
	h.workload(t, "web-1", "10.0.0.2", 8080, 18080)
	if add := recv(t, stream).GetAdd(); add == nil || len(add.Endpoints) != 1 || add.Endpoints[0].Address != "10.0.0.2:18080" {
		t.Fatalf("second workload: %v", add)
	}
	if err := h.store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	if rm := recv(t, stream).GetRemove(); rm == nil || len(rm.Addresses) != 1 || rm.Addresses[0] != "10.0.0.1:18080" {
		t.Fatalf("after deleting web-0: %v", rm)
	}

	// The same service by its virtual IP, and a port it does not serve.
	byIP, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "10.240.0.9:8080"})
	if err != nil {
		t.Fatal(err)
	}
	if add := recv(t, byIP).GetAdd(); add == nil || len(add.Endpoints) != 1 || add.Endpoints[0].Address != "10.0.0.2:18080" {
		t.Fatalf("by virtual IP: %v", add)
	}
	other, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "web.default.svc.cluster.local:9999"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, other); u.GetNoEndpoints() == nil || !u.GetNoEndpoints().Exists {
		t.Fatalf("an unserved port of a known service: %v", u)
	}
	unknownIP, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "192.0.2.1:80"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, unknownIP); u.GetNoEndpoints() == nil || u.GetNoEndpoints().Exists {
		t.Fatalf("an unknown IP: %v", u)
	}
}

func TestGetRefusesBadAuthorities(t *testing.T) {
	h := start(t, DefaultQueue)
	stream, err := h.client.Get(context.Background(), &destinationv1.GetDestination{Authority: "no-port"})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil {
		t.Fatal("an authority without a port was accepted")
	}
}

func TestGetProfile(t *testing.T) {
	h := start(t, DefaultQueue)
	h.apply(t, resources.KindService, "shop", "db", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 5432, Protocol: "opaque"}, {Port: 80}}}, nil)
	for _, tc := range []struct {
		authority string
		want      *destinationv1.Profile
	}{
		{"db.shop:5432", &destinationv1.Profile{FullyQualifiedName: "db.shop.svc.cluster.local", Opaque: true}},
		{"db.shop:80", &destinationv1.Profile{FullyQualifiedName: "db.shop.svc.cluster.local"}},
		{"nothing.shop:80", &destinationv1.Profile{}},
	} {
		s, err := h.client.GetProfile(context.Background(), &destinationv1.GetDestination{Authority: tc.authority})
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Recv()
		if err != nil || p.FullyQualifiedName != tc.want.FullyQualifiedName || p.Opaque != tc.want.Opaque {
			t.Errorf("%s: %v, %v; want %v", tc.authority, p, err, tc.want)
		}
	}
}

// A subscriber that stops reading is closed when its queue overflows;
// writers never wait for it and other subscribers get every update.
func TestSlowSubscriberIsClosedWithoutBlockingOthers(t *testing.T) {
	h := start(t, 2)
	ctx := context.Background()
	slow, err := h.index.subscribe(ctx, "web:8080", "default")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.index.subscribe(ctx, "web:8080", "default")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 100)
	go func() {
		for set := range fast.queue {
			got <- len(set.endpoints)
		}
	}()
	start := time.Now()
	for i := range 10 {
		h.workload(t, fmt.Sprintf("web-%d", i), fmt.Sprintf("10.0.0.%d", i+1), 8080, 8080)
		// Let the fast reader keep up; the slow one never reads.
		deadline := time.After(5 * time.Second)
		for n := -1; n != i+1; {
			select {
			case n = <-got:
			case <-deadline:
				t.Fatalf("the reading subscriber missed update %d", i+1)
			}
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("writes took %v", d)
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("the subscriber that never read was not closed")
	}
	if h.index.Overflows() != 1 {
		t.Errorf("overflows = %d, want 1", h.index.Overflows())
	}
}

func TestServiceIP(t *testing.T) {
	h := start(t, DefaultQueue)
	h.apply(t, resources.KindService, "default", "web", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 80}}, ClusterIP: "10.240.0.3"}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ip, ok := h.index.ServiceIP("web", "default"); ok {
			if ip.String() != "10.240.0.3" {
				t.Fatalf("ServiceIP = %v", ip)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the service never reached the index")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := h.index.ServiceIP("nothing", "default"); ok {
		t.Error("an unknown service has an IP")
	}
}

// A stream for a virtual IP no service has yet follows the service that
// later takes it.
func TestVirtualIPTakenLater(t *testing.T) {
	h := start(t, DefaultQueue)
	stream, err := h.client.Get(context.Background(), &destinationv1.GetDestination{Authority: "10.240.0.50:8080"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, stream); u.GetNoEndpoints() == nil || u.GetNoEndpoints().Exists {
		t.Fatalf("first update: %v", u)
	}
	h.apply(t, resources.KindService, "default", "web", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 8080}}, ClusterIP: "10.240.0.50"}, nil)
	if u := recv(t, stream); u.GetNoEndpoints() == nil || !u.GetNoEndpoints().Exists {
		t.Fatalf("after the service took the IP: %v", u)
	}
	h.workload(t, "web-0", "10.0.0.1", 8080, 8080)
	if add := recv(t, stream).GetAdd(); add == nil || len(add.Endpoints) != 1 {
		t.Fatalf("after a workload registered: %v", add)
	}
}

// An instance without a proxy (a Kubernetes endpoint of an unmeshed Pod) is
// an endpoint without identity, mesh port or HTTP/2 hint: proxies reach it
// as the application expects, in plaintext.
func TestUnmeshedEndpointHasNoIdentityOrHint(t *testing.T) {
	h := start(t, DefaultQueue)
	h.apply(t, resources.KindService, "default", "web", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 8080}}, ClusterIP: "10.240.0.9"}, nil)
	h.apply(t, resources.KindWorkload, "default", "plain-0", resources.WorkloadSpec{Service: "web", Address: "10.0.0.3",
		Ports: []resources.WorkloadPort{{Port: 8080, TargetPort: 80}}}, nil)
	stream, err := h.client.Get(context.Background(), &destinationv1.GetDestination{Authority: "web:8080", ContextNamespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	add := recv(t, stream).GetAdd()
	if add == nil || len(add.Endpoints) != 1 {
		t.Fatalf("want the unmeshed endpoint, got %v", add)
	}
	if ep := add.Endpoints[0]; ep.Address != "10.0.0.3:80" || ep.Identity != "" || ep.MeshPort != 0 || ep.ProtocolHint != destinationv1.ProtocolHint_PROTOCOL_HINT_UNKNOWN {
		t.Errorf("endpoint %v", ep)
	}
}

// A stream for an instance's own address — no service's virtual IP — gets
// that instance as its one endpoint, with its identity (so the call is
// mTLS to its proxy, not plaintext), and follows it as it comes and goes;
// a port it does not listen on gets nothing.
func TestGetByEndpointAddress(t *testing.T) {
	h := start(t, DefaultQueue)
	ctx := context.Background()
	h.apply(t, resources.KindService, "default", "web", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 8080}}, ClusterIP: "10.240.0.9"}, nil)
	h.workload(t, "web-0", "10.0.0.1", 8080, 18080)
	direct, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "10.0.0.1:18080"})
	if err != nil {
		t.Fatal(err)
	}
	add := recv(t, direct).GetAdd()
	if add == nil || len(add.Endpoints) != 1 || add.Endpoints[0].Address != "10.0.0.1:18080" ||
		add.Endpoints[0].Identity != "spiffe://cluster.local/ns/default/sa/web" || add.MetricLabels["dst_service"] != "web" {
		t.Fatalf("an instance's address: %v", add)
	}
	if err := h.store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	if u := recv(t, direct); u.GetNoEndpoints() == nil {
		t.Fatalf("after the instance left: %v", u)
	}
	h.workload(t, "web-1", "10.0.0.1", 8080, 18080) // another instance at the address
	if add := recv(t, direct).GetAdd(); add == nil || len(add.Endpoints) != 1 || add.Endpoints[0].MetricLabels["dst_instance"] != "web-1" {
		t.Fatalf("a new instance at the address: %v", add)
	}
	unserved, err := h.client.Get(ctx, &destinationv1.GetDestination{Authority: "10.0.0.1:9999"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, unserved); u.GetNoEndpoints() == nil || u.GetNoEndpoints().Exists {
		t.Fatalf("a port the instance does not listen on: %v", u)
	}
}

// A rate limit policy whose target is a Service is in the service's
// profile, with its overrides' service accounts; changing or deleting it
// streams a new profile.
func TestProfileCarriesTheCallersLimit(t *testing.T) {
	h := start(t, DefaultQueue)
	h.apply(t, resources.KindService, "shop", "db", resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 80}}}, nil)
	s, err := h.client.GetProfile(context.Background(), &destinationv1.GetDestination{Authority: "db.shop:80"})
	if err != nil {
		t.Fatal(err)
	}
	next := func() *destinationv1.Profile {
		t.Helper()
		p, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := next(); p.RateLimit != nil {
		t.Fatalf("first profile: limit %v, want none", p.RateLimit)
	}
	limit := func(total int) {
		raw := fmt.Sprintf(`{"targetRef": {"kind": "Service", "name": "db"}, "total": {"requestsPerSecond": %d},
			"overrides": [{"requestsPerSecond": 2, "clientRefs": [{"kind": "ServiceAccount", "name": "batch"}, {"kind": "ServiceAccount", "name": "ops", "namespace": "tools"}]}]}`, total)
		if _, err := h.store.Apply(context.Background(), store.Resource{APIVersion: resources.PolicyAPIVersion, Kind: resources.KindHTTPLocalRateLimitPolicy,
			Metadata: store.Metadata{Name: "db-callers", Namespace: "shop"}, Spec: json.RawMessage(raw)}); err != nil {
			t.Fatal(err)
		}
	}
	limit(50)
	want := &destinationv1.ClientRateLimit{Name: "shop/db-callers", Total: 50, Overrides: []*destinationv1.ClientRateOverride{
		{RequestsPerSecond: 2, ServiceAccounts: []string{"shop/batch", "tools/ops"}}}}
	if p := next(); !proto.Equal(p.RateLimit, want) {
		t.Errorf("after the policy: limit %v, want %v", p.RateLimit, want)
	}
	limit(60)
	if p := next(); p.RateLimit.GetTotal() != 60 {
		t.Errorf("after a change: limit %v, want a total of 60", p.RateLimit)
	}
	if err := h.store.Delete(context.Background(), store.Key{Kind: resources.KindHTTPLocalRateLimitPolicy, Namespace: "shop", Name: "db-callers"}); err != nil {
		t.Fatal(err)
	}
	if p := next(); p.RateLimit != nil {
		t.Errorf("after the policy was deleted: limit %v, want none", p.RateLimit)
	}
}
