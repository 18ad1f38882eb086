package discover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/destination"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// controlPlane is a real store and destination server on a fixed address,
// which can be stopped and started again.
type controlPlane struct {
	t     *testing.T
	addr  string
	store *store.DB
	stop  func()
}

func newControlPlane(t *testing.T) *controlPlane {
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cp := &controlPlane{t: t, store: db}
	cp.start()
	t.Cleanup(func() { cp.stop() })
	return cp
}

func (cp *controlPlane) start() {
	addr := cp.addr
	if addr == "" {
		addr = testkit.FreeAddr(cp.t) // (not an ephemeral port: it is bound again after a stop)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ix := destination.NewIndex(cp.store, "cluster.local", destination.DefaultQueue, discard)
	done := make(chan struct{})
	go func() { ix.Run(ctx); close(done) }()
	srv := grpc.NewServer()
	destination.NewServer(ix).Register(srv)
	go srv.Serve(ln)
	cp.stop = func() { srv.Stop(); cancel(); <-done }
}

func (cp *controlPlane) workload(name, addr string, delete bool) {
	ctx := context.Background()
	key := store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: name}
	if delete {
		if err := cp.store.Delete(ctx, key); err != nil {
			cp.t.Fatal(err)
		}
		return
	}
	spec, _ := json.Marshal(resources.WorkloadSpec{Service: "web", Identity: "spiffe://cluster.local/ns/default/sa/web", Address: addr,
		Ports: []resources.WorkloadPort{{Port: 8080, TargetPort: 8080}}, MeshPort: 5000})
	if _, err := cp.store.Apply(ctx, store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload,
		Metadata: store.Metadata{Name: name, Namespace: "default"}, Spec: spec}); err != nil {
		cp.t.Fatal(err)
	}
}

func resolver(t *testing.T, addr string) *Resolver {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	return NewResolver(ctx, Config{Client: destinationv1.NewDestinationClient(conn), Namespace: "default", Wait: 5 * time.Second, Log: discard})
}

func addrs(s *Service) []string {
	var out []string
	for _, ep := range s.Set().Endpoints {
		out = append(out, ep.Addr)
	}
	sort.Strings(out)
	return out
}

// eventually waits until s's endpoints are want.
func eventually(t *testing.T, s *Service, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := addrs(s)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints %v; want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestResolveFollowsTheServiceAndOutlivesTheControlPlane(t *testing.T) {
	cp := newControlPlane(t)
	cp.workload("web-0", "10.0.0.1", false)
	cp.workload("web-1", "10.0.0.2", false)
	r := resolver(t, cp.addr)
	ctx := context.Background()
	svc := r.Resolve(ctx, "web:8080")
	if svc == nil {
		t.Fatal("a registered service did not resolve")
	}
	eventually(t, svc, "10.0.0.1:8080", "10.0.0.2:8080")
	if r.Resolve(ctx, "web:8080") != svc {
		t.Error("a second lookup opened a second watch")
	}
	if p := r.MeshPort("10.0.0.1:8080"); p != 5000 {
		t.Errorf("MeshPort = %d, want 5000", p)
	}
	if r.Resolve(ctx, "nothing:8080") != nil {
		t.Error("an unknown service resolved")
	}

	picked := map[string]int{}
	for range 200 {
		ep, err := svc.Pick()
		if err != nil {
			t.Fatal(err)
		}
		ep.Start()
		picked[ep.Addr]++
		ep.End(time.Millisecond, balance.Success)
	}
	// Peak-EWMA keeps sequential traffic on the endpoint measured fastest;
	// once that one fails to connect, the other takes it all.
	used := ""
	for addr := range picked {
		used = addr
	}
	r.Failed(used)
	for range 100 {
		if ep, err := svc.Pick(); err != nil || ep.Addr == used {
			t.Fatalf("picked %v, %v; not %s, which just failed to connect", ep, err, used)
		}
	}

	cp.workload("web-2", "10.0.0.3", false)
	eventually(t, svc, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")

	// The control plane goes away: the last set keeps serving.
	cp.stop()
	cp.workload("web-0", "", true)
	time.Sleep(300 * time.Millisecond)
	if got := addrs(svc); len(got) != 3 {
		t.Fatalf("while the control plane is down: %v; want the last 3 endpoints", got)
	}
	// It comes back with a changed set: the new stream replaces the old state.
	cp.start()
	eventually(t, svc, "10.0.0.2:8080", "10.0.0.3:8080")

	cp.workload("web-1", "", true)
	cp.workload("web-2", "", true)
	eventually(t, svc)
	// Its last workload gone, so is the service.
	if _, err := svc.Pick(); !errors.Is(err, ErrNoService) {
		t.Errorf("no workload left: %v; want ErrNoService", err)
	}
}

func TestResolveGivesUpWithoutAControlPlane(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewResolver(ctx, Config{Client: destinationv1.NewDestinationClient(conn), Wait: 200 * time.Millisecond, Log: discard})
	start := time.Now()
	if r.Resolve(ctx, "web:8080") != nil {
		t.Fatal("resolved without a control plane")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v; the wait is 200ms", d)
	}
}

// A mesh service name is not given up on: before its service exists, and
// when the control plane has not answered, Resolve returns it and Pick says
// why there is no endpoint; other names are forwarded as addressed.
func TestMeshNamesAreNeverForwardedAsAddressed(t *testing.T) {
	cp := newControlPlane(t)
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewResolver(ctx, Config{Client: destinationv1.NewDestinationClient(conn), Namespace: "default", ClusterDomain: "cluster.local", Wait: 5 * time.Second, Log: discard})
	svc := r.Resolve(ctx, "web.default.svc.cluster.local.:8080")
	if svc == nil {
		t.Fatal("a mesh service name with no service yet was given up on")
	}
	if _, err := svc.Pick(); !errors.Is(err, ErrNoService) {
		t.Errorf("before the service exists: %v; want ErrNoService", err)
	}
	if r.Resolve(ctx, "web.example.com:8080") != nil || r.Resolve(ctx, "nothing:8080") != nil {
		t.Error("a name outside the cluster domain resolved to nothing known")
	}
	cp.workload("web-0", "10.0.0.1", false)
	eventually(t, svc, "10.0.0.1:8080")

	// No control plane answering: the wait ends, the name still stays in the mesh.
	cp.stop()
	dead := NewResolver(ctx, Config{Client: destinationv1.NewDestinationClient(conn), ClusterDomain: "cluster.local", Wait: 100 * time.Millisecond, Log: discard})
	s := dead.Resolve(ctx, "web.default.svc.cluster.local:8080")
	if s == nil {
		t.Fatal("a mesh service name was given up on without a control plane")
	}
	if _, err := s.Pick(); !errors.Is(err, ErrUnresolved) {
		t.Errorf("without an answer: %v; want ErrUnresolved", err)
	}
	if dead.Resolve(ctx, "web:8080") != nil {
		t.Error("a short name resolved without a control plane")
	}
}
