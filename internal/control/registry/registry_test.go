package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// clock is a fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func openStore(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path, store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newRegistry(db *store.DB, c *clock) *Registry {
	return New(Config{Store: db, TrustDomain: "cluster.local", TTL: 3 * time.Second, RestartGrace: 10 * time.Second,
		IPs: &ClusterIPs{Store: db, CIDR: DefaultServiceCIDR}, Now: c.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// as is a context whose gRPC peer proved id with its certificate and
// connected from 10.0.0.1, the address request registers.
func as(id string) context.Context { return asFrom(id, "10.0.0.1") }

// asFrom is as, connected from addr to the control plane at 10.0.0.254.
func asFrom(id, addr string) context.Context {
	parsed, _ := meshid.Parse(id)
	cert := &x509.Certificate{URIs: []*url.URL{parsed.URL()}}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:      net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 40000)),
		LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.254:8086")),
		AuthInfo:  credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}},
	})
}

const web = "spiffe://cluster.local/ns/default/sa/web"

func request(name string) *destinationv1.RegisterRequest {
	return &destinationv1.RegisterRequest{Name: name, Service: "web", Address: "10.0.0.1",
		Ports: []*destinationv1.Port{{Port: 8080, TargetPort: 18080, Protocol: "http"}}, MeshPort: 4143, AdminPort: 4191,
		Labels: map[string]string{resources.WorkloadLabel: "web"}}
}

// sweepFor advances c by d, sweeping as Run does (every quarter TTL).
func sweepFor(g *Registry, c *clock, d time.Duration) {
	step := g.cfg.TTL / 4
	for end := c.Now().Add(d); c.Now().Before(end); {
		c.Advance(min(step, end.Sub(c.Now())))
		g.expire(context.Background())
	}
}

func exists(t *testing.T, db *store.DB, name string) bool {
	t.Helper()
	_, err := db.Get(context.Background(), store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: name})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestLeaseLifecycle(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	c := &clock{now: time.Unix(1_000_000, 0)}
	g := newRegistry(db, c)
	ctx := as(web)
	lease, err := g.Register(ctx, request("web-0"))
	if err != nil {
		t.Fatal(err)
	}
	if lease.Workload != "default/web-0" || lease.Ttl.AsDuration() != 3*time.Second {
		t.Errorf("lease %v", lease)
	}
	// Registration creates the service, with a virtual IP and the port.
	svc, err := db.Get(context.Background(), store.Key{Kind: resources.KindService, Namespace: "default", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var spec resources.ServiceSpec
	resources.Decode(svc.Spec, &spec)
	if spec.ClusterIP != "10.240.0.1" || len(spec.Ports) != 1 || spec.Ports[0].Port != 8080 {
		t.Errorf("service %s", svc.Spec)
	}

	// Renewing keeps it past the TTL; stopping renewing lets it lapse.
	for range 5 {
		c.Advance(time.Second)
		if _, err := g.Renew(ctx, &destinationv1.RenewRequest{Name: "web-0"}); err != nil {
			t.Fatal(err)
		}
		g.expire(context.Background())
	}
	if !exists(t, db, "web-0") {
		t.Fatal("a renewed workload was removed")
	}
	sweepFor(g, c, 3*time.Second+time.Millisecond)
	if exists(t, db, "web-0") {
		t.Fatal("a lapsed workload is still registered")
	}
	if _, err := g.Renew(ctx, &destinationv1.RenewRequest{Name: "web-0"}); status.Code(err) != codes.NotFound {
		t.Fatalf("renewing a lapsed lease: %v; want NotFound", err)
	}

	// Deregistering removes it at once.
	if _, err := g.Register(ctx, request("web-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Deregister(ctx, &destinationv1.DeregisterRequest{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	if exists(t, db, "web-1") {
		t.Fatal("a deregistered workload is still registered")
	}
}

func TestLeasesSurviveARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db := openStore(t, path)
	c := &clock{now: time.Unix(1_000_000, 0)}
	if _, err := newRegistry(db, c).Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openStore(t, path)
	defer db.Close()
	g := newRegistry(db, c)
	if err := g.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	sweepFor(g, c, 10*time.Second) // past the TTL, within TTL + grace
	if !exists(t, db, "web-0") {
		t.Fatal("a workload was dropped within its restart grace")
	}
	if _, err := g.Renew(as(web), &destinationv1.RenewRequest{Name: "web-0"}); err != nil {
		t.Fatalf("renewing after a restart: %v", err)
	}
	sweepFor(g, c, 4*time.Second)
	if exists(t, db, "web-0") {
		t.Fatal("the workload outlived its lease")
	}
}

func TestRegisterRefusals(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	g := newRegistry(db, &clock{now: time.Unix(1_000_000, 0)})
	if _, err := g.Register(context.Background(), request("web-0")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a certificate: %v; want Unauthenticated", err)
	}
	if _, err := g.Register(as("spiffe://elsewhere.org/ns/default/sa/web"), request("web-0")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("foreign trust domain: %v; want PermissionDenied", err)
	}
	bad := request("web-0")
	bad.Address = "nowhere"
	if _, err := g.Register(as(web), bad); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad address: %v; want InvalidArgument", err)
	}
	bad = request("Web_0")
	if _, err := g.Register(as(web), bad); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad name: %v; want InvalidArgument", err)
	}
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	other := as("spiffe://cluster.local/ns/default/sa/intruder")
	if _, err := g.Register(other, request("web-0")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("taking over another identity's workload: %v; want PermissionDenied", err)
	}
	if _, err := g.Renew(other, &destinationv1.RenewRequest{Name: "web-0"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("renewing another identity's lease: %v; want PermissionDenied", err)
	}
	if _, err := g.Deregister(other, &destinationv1.DeregisterRequest{Name: "web-0"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("deregistering another identity's workload: %v; want PermissionDenied", err)
	}
}

func TestClusterIPsAreDistinctAndStable(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	ips := &ClusterIPs{Store: db, CIDR: netip.MustParsePrefix("10.9.0.0/30")}
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		if err := ips.EnsureService(ctx, "default", name, []resources.ServicePort{{Port: 80}}, "web"); err != nil {
			t.Fatal(err)
		}
	}
	if err := ips.EnsureService(ctx, "default", "c", []resources.ServicePort{{Port: 80}}, "web"); err == nil {
		t.Fatal("a /30 holds two service IPs; the third service got one")
	}
	// Adding a port keeps the IP.
	if err := ips.EnsureService(ctx, "default", "a", []resources.ServicePort{{Port: 81}}, "web"); err != nil {
		t.Fatal(err)
	}
	got := map[string]resources.ServiceSpec{}
	for _, name := range []string{"a", "b"} {
		r, err := db.Get(ctx, store.Key{Kind: resources.KindService, Namespace: "default", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		var s resources.ServiceSpec
		resources.Decode(r.Spec, &s)
		got[name] = s
	}
	if got["a"].ClusterIP != "10.9.0.1" || got["b"].ClusterIP != "10.9.0.2" || len(got["a"].Ports) != 2 {
		t.Errorf("services %+v", got)
	}
	// Applying a service without an IP keeps the one it has (and the
	// identities it is bound to).
	r := store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService, Metadata: store.Metadata{Name: "b", Namespace: "default"}, Spec: []byte(`{"ports":[{"port":80}]}`)}
	if got, err := ips.Apply(ctx, r); err != nil || string(got.Spec) != `{"clusterIP":"10.9.0.2","ports":[{"port":80}],"serviceAccounts":["web"]}` {
		t.Errorf("Apply: %s, %v", got.Spec, err)
	}
}

func TestConcurrentServicesGetDistinctIPs(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	ips := &ClusterIPs{Store: db, CIDR: DefaultServiceCIDR}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			name := "svc-" + strconv.Itoa(i)
			var err error
			if i%2 == 0 {
				err = ips.EnsureService(ctx, "default", name, []resources.ServicePort{{Port: 80}}, "web")
			} else {
				_, err = ips.Apply(ctx, store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService,
					Metadata: store.Metadata{Name: name, Namespace: "default"}, Spec: []byte(`{"ports":[{"port":80}]}`)})
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	svcs, _, err := db.List(ctx, resources.KindService, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, s := range svcs {
		var spec resources.ServiceSpec
		resources.Decode(s.Spec, &spec)
		if other, dup := seen[spec.ClusterIP]; dup || spec.ClusterIP == "" {
			t.Errorf("%s and %s share clusterIP %q", s.Metadata.Name, other, spec.ClusterIP)
		}
		seen[spec.ClusterIP] = s.Metadata.Name
	}
	if len(seen) != 20 {
		t.Errorf("%d distinct IPs for 20 services", len(seen))
	}
}

func TestRenewAfterDeleteAndStaticWorkloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db := openStore(t, path)
	c := &clock{now: time.Unix(1_000_000, 0)}
	g := newRegistry(db, c)
	if _, err := g.Register(as(web), request("web-0")); err != nil {
		t.Fatal(err)
	}
	// Removed by hand (trellis delete): the next renewal says register again.
	if err := db.Delete(context.Background(), store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: "web-0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Renew(as(web), &destinationv1.RenewRequest{Name: "web-0"}); status.Code(err) != codes.NotFound {
		t.Fatalf("renewing a deleted workload: %v; want NotFound", err)
	}
	// A workload applied by hand holds no lease and never lapses, restart or not.
	spec := []byte(`{"service":"web","identity":"` + web + `","address":"10.0.0.9","ports":[{"port":80,"targetPort":80}],"meshPort":4143}`)
	if _, err := db.Apply(context.Background(), store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload,
		Metadata: store.Metadata{Name: "static", Namespace: "default"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openStore(t, path)
	defer db.Close()
	g = newRegistry(db, c)
	if err := g.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	sweepFor(g, c, time.Minute)
	if !exists(t, db, "static") {
		t.Fatal("a workload applied by hand was expired")
	}
}
