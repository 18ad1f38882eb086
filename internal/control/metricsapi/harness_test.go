package metricsapi_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// A small mesh for the tests: traffic-0 calls web (web-0, web-1) over
// mTLS, and web-0 calls voting-0; each "proxy" is a real metrics registry
// served on a real admin port.
const (
	trafficID = "spiffe://cluster.local/ns/default/sa/traffic"
	webID     = "spiffe://cluster.local/ns/default/sa/web"
	votingID  = "spiffe://cluster.local/ns/default/sa/voting"
)

type fakeProxy struct {
	name, workload string
	reg            *metrics.Registry
	srv            *httptest.Server
}

type mesh struct {
	store   *store.DB
	proxies map[string]*fakeProxy
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{Kinds: resources.Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := &mesh{store: db, proxies: map[string]*fakeProxy{}}
	for _, p := range []struct{ name, workload, id string }{
		{"traffic-0", "traffic", trafficID}, {"web-0", "web", webID}, {"web-1", "web", webID}, {"voting-0", "voting", votingID},
	} {
		m.add(t, p.name, p.workload, p.id)
	}
	return m
}

// add starts a proxy's admin server and registers its workload.
func (m *mesh) add(t *testing.T, name, workload, id string) *fakeProxy {
	t.Helper()
	reg := metrics.NewRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		reg.WriteText(w)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	adminPort, _ := strconv.Atoi(port)
	spec, _ := json.Marshal(resources.WorkloadSpec{Service: workload, Identity: id, Address: host, AdminPort: adminPort,
		Ports: []resources.WorkloadPort{{Port: 8080, TargetPort: 8080}}, MeshPort: 4143})
	if _, err := m.store.Apply(context.Background(), store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload,
		Metadata: store.Metadata{Name: name, Namespace: "default", Labels: map[string]string{resources.WorkloadLabel: workload}}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	p := &fakeProxy{name: name, workload: workload, reg: reg, srv: srv}
	m.proxies[name] = p
	return p
}

func (m *mesh) remove(t *testing.T, name string) {
	t.Helper()
	if err := m.store.Delete(context.Background(), store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: name}); err != nil {
		t.Fatal(err)
	}
	m.proxies[name].srv.Close()
}

// traffic records n calls from traffic-0 to web-i (outbound on traffic-0,
// inbound on web-i), of which failed answer 500; latency is web's.
func (m *mesh) traffic(web string, n, failed int, latency time.Duration) {
	out := m.proxies["traffic-0"].reg.HTTP(metrics.Labels{Direction: "outbound", Authority: "web:8080", TargetAddr: "10.0.0.2:8080", TLS: "true",
		ServerID: webID, Dst: metrics.RenderDst(map[string]string{"dst_service": "web", "dst_namespace": "default", "dst_workload": "web", "dst_instance": web})})
	in := m.proxies[web].reg.HTTP(metrics.Labels{Direction: "inbound", TargetAddr: "127.0.0.1:8080", TLS: "true", ClientID: trafficID})
	route := m.proxies["traffic-0"].reg.Route(metrics.RouteLabels{Authority: "web:8080",
		Service: metrics.RenderDst(map[string]string{"dst_service": "web", "dst_namespace": "default"})})
	for i := range n {
		status := 200
		if i < failed {
			status = 500
		}
		for _, s := range []*metrics.HTTP{out, in, &route.HTTP} {
			s.Request()
			s.Response(status, -1, status >= 500, latency)
		}
		if status >= 500 {
			route.Retry()
		}
	}
}
