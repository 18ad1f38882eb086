// Command discovery benchmarks the destination service as proxies see it:
// a real `trellis-control all` process holding W workloads in S services,
// N proxies' worth of watching streams (each its own TLS connection), and
// the time from a registration change being written to every watcher of
// that service holding the new endpoint set, with the control plane's
// memory. The baseline, measured in the same run, is the same change with
// one service, one workload and one watcher.
//
// With -kubeconfig the endpoints are a Kubernetes cluster's instead: the
// control plane is `trellis-control destination --kubernetes` on this
// machine, mirroring the cluster's API server; each service is a Service
// without a selector with one EndpointSlice, and a change is an endpoint
// added to or removed from the slice — from the API server's write to
// every watcher updated. No Pod runs: the slices' endpoints are the
// workloads.
//
//	go run ./bench/discovery                      # 1,000 workloads, 100 services, 500 watchers
//	go run ./bench/discovery -changes 500 -json out.json
//	go run ./bench/discovery -kubeconfig $(test/kube/cluster.sh kubeconfig)
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	proxyidentity "github.com/trellis-mesh/trellis/internal/proxy/identity"
)

func main() {
	workloads := flag.Int("workloads", 1000, "registered workloads")
	services := flag.Int("services", 100, "services they are spread over")
	watchers := flag.Int("watchers", 500, "watching streams, spread evenly over the services, one TLS connection each")
	changes := flag.Int("changes", 200, "registration changes measured (each adds or removes one workload)")
	control := flag.String("control", "", "trellis-control binary (default: go build ./cmd/trellis-control)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	kubeconfig := flag.String("kubeconfig", "", "benchmark the Kubernetes mirror: endpoints written to this cluster's API server")
	flag.Parse()
	if *services < 1 || *workloads < *services || *watchers < *services || *changes < 1 || *workloads / *services + *changes / *services > 250 || *changes > 250 {
		log.Fatal("need workloads >= services >= 1, watchers >= services, 1 <= changes <= 250, and at most 250 workloads per service")
	}
	dir, err := os.MkdirTemp("", "trellis-bench-discovery-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if *control == "" {
		*control = filepath.Join(dir, "trellis-control")
		log.Printf("building trellis-control")
		if out, err := exec.Command("go", "build", "-o", *control, "./cmd/trellis-control").CombinedOutput(); err != nil {
			log.Fatalf("go build: %v\n%s", err, out)
		}
	}

	base := run(*control, *kubeconfig, filepath.Join(dir, "baseline"), "bench-baseline", 1, 1, 1, *changes)
	loaded := run(*control, *kubeconfig, filepath.Join(dir, "loaded"), "bench-loaded", *workloads, *services, *watchers, *changes)

	what := "registration change"
	if *kubeconfig != "" {
		what = "EndpointSlice change (Kubernetes)"
	}
	fmt.Printf("\n### Discovery: %s → every watcher of the service updated\n\n", what)
	fmt.Printf("| scenario | watchers updated per change | p50 | p99 | max | control plane RSS | peak RSS |\n|---|---|---|---|---|---|---|\n")
	for _, r := range []result{base, loaded} {
		fmt.Printf("| %s | %d | %s | %s | %s | %.1f MiB | %.1f MiB |\n", r.Name, r.PerChange, ms(r.P50), ms(r.P99), ms(r.Max), r.RSSMiB, r.PeakRSSMiB)
	}
	fmt.Printf("\nratio loaded / baseline: p50 %.2f×, p99 %.2f×; targets: p99 ≤ 100 ms, RSS ≤ 200 MiB\n", ratio(loaded.P50, base.P50), ratio(loaded.P99, base.P99))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent([]result{base, loaded}, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

type result struct {
	Name       string
	Workloads  int
	Services   int
	Watchers   int
	PerChange  int
	P50, P99   time.Duration
	Max        time.Duration
	RSSMiB     float64
	PeakRSSMiB float64
}

// source is where the endpoints are written: the control plane's local
// API, or a cluster's API server.
type source interface {
	// setup writes services with perService endpoints each.
	setup(ctx context.Context, services, perService int)
	add(ctx context.Context, s, w int)
	remove(ctx context.Context, s, w int)
}

// run measures one scenario against a fresh control plane, whose
// endpoints come from the cluster of kubeconfig if it is set.
func run(control, kubeconfig, dataDir, ns string, workloads, services, watchers, changes int) result {
	name := fmt.Sprintf("%d workloads, %d services, %d watchers", workloads, services, watchers)
	log.Printf("scenario: %s", name)
	ctl, admin := freePort(), freePort()
	args := []string{"--log-level=warn", "all", "--data-dir=" + dataDir, "--addr=" + ctl, "--admin-addr=" + admin}
	if kubeconfig != "" {
		args = []string{"--log-level=warn", "destination", "--kubernetes", "--kubeconfig=" + kubeconfig, "--data-dir=" + dataDir,
			"--addr=" + ctl, "--admin-addr=" + admin}
	}
	cp := exec.Command(control, args...)
	cp.Stderr = os.Stderr
	if err := cp.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cp.Process.Kill(); cp.Wait() }()
	api := localapi.NewClient(filepath.Join(dataDir, localapi.SocketName))
	ctx := context.Background()
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := api.Status(ctx); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			log.Fatal("the control plane did not start")
		}
	}
	var src source = localSource{api: api, ns: ns}
	if kubeconfig != "" {
		ks := newKubeSource(kubeconfig, ns)
		defer ks.close()
		src = ks
	}

	log.Printf("registering %d workloads", workloads)
	perService := workloads / services
	src.setup(ctx, services, perService)

	log.Printf("opening %d watching streams", watchers)
	anchors := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(dataDir, pki.AnchorFile))
	if err != nil || !anchors.AppendCertsFromPEM(pem) {
		log.Fatalf("trust anchor: %v", err)
	}
	// The control plane answers proxies only: the watchers present a
	// proxy's certificate, issued from the data directory's issuer.
	ca, _, err := pki.LoadOrCreateDir(dataDir, meshid.DefaultTrustDomain, time.Now())
	if err != nil {
		log.Fatalf("issuer: %v", err)
	}
	cert, err := ca.IssueTLS(meshid.ID{TrustDomain: meshid.DefaultTrustDomain, Namespace: ns, ServiceAccount: "bench"}, time.Hour, time.Now())
	if err != nil {
		log.Fatalf("client certificate: %v", err)
	}
	creds := credentials.NewTLS(proxyidentity.ClientConfig(anchors, meshid.IdentityServiceID(meshid.DefaultTrustDomain),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }))
	ws := make([]*watcher, watchers)
	byService := map[int][]*watcher{}
	for i := range ws {
		s := i % services
		ws[i] = watch(ctx, ctl, creds, ns, s)
		byService[s] = append(byService[s], ws[i])
	}
	for _, w := range ws {
		w.waitFor(func(set map[string]bool) bool { return len(set) == perService }, 60*time.Second)
	}

	log.Printf("measuring %d changes", changes)
	var lat []time.Duration
	for i := range changes {
		s := i % services
		w := perService + i/services // a workload index that does not exist yet ...
		addr := endpointAddr(s, w)
		start := time.Now()
		src.add(ctx, s, w)
		lat = append(lat, waitAll(byService[s], func(set map[string]bool) bool { return set[addr] }, start))
		start = time.Now() // ... and remove it again
		src.remove(ctx, s, w)
		lat = append(lat, waitAll(byService[s], func(set map[string]bool) bool { return !set[addr] }, start))
	}
	slices.Sort(lat)
	rss, peak := procKB(cp.Process.Pid, "VmRSS:"), procKB(cp.Process.Pid, "VmHWM:")
	for _, w := range ws {
		w.conn.Close()
	}
	return result{Name: name, Workloads: workloads, Services: services, Watchers: watchers, PerChange: len(byService[0]),
		P50: lat[len(lat)/2], P99: lat[len(lat)*99/100], Max: lat[len(lat)-1], RSSMiB: float64(rss) / 1024, PeakRSSMiB: float64(peak) / 1024}
}

// localSource registers workloads through the control plane's local API.
type localSource struct {
	api *localapi.Client
	ns  string
}

func (l localSource) setup(ctx context.Context, services, perService int) {
	for s := range services {
		batch := []store.Resource{serviceResource(l.ns, s)}
		for w := range perService {
			batch = append(batch, workloadResource(l.ns, s, w))
		}
		if _, err := l.api.Apply(ctx, batch); err != nil {
			log.Fatal(err)
		}
	}
}

func (l localSource) add(ctx context.Context, s, w int) {
	if _, err := l.api.Apply(ctx, []store.Resource{workloadResource(l.ns, s, w)}); err != nil {
		log.Fatal(err)
	}
}

func (l localSource) remove(ctx context.Context, s, w int) {
	res := workloadResource(l.ns, s, w)
	if err := l.api.Delete(ctx, res.Key()); err != nil {
		log.Fatal(err)
	}
}

// waitAll returns how long after start every watcher satisfied ok.
func waitAll(ws []*watcher, ok func(map[string]bool) bool, start time.Time) time.Duration {
	var last time.Time
	for _, w := range ws {
		if t := w.waitFor(ok, 30*time.Second); t.After(last) {
			last = t
		}
	}
	return last.Sub(start)
}

func serviceResource(ns string, s int) store.Resource {
	spec, _ := json.Marshal(resources.ServiceSpec{Ports: []resources.ServicePort{{Port: 8080}}})
	return store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService, Spec: spec,
		Metadata: store.Metadata{Name: fmt.Sprintf("svc-%d", s), Namespace: ns}}
}

// endpointAddr is workload w of service s's address (w < 254).
func endpointAddr(s, w int) string { return fmt.Sprintf("10.%d.%d.%d:8080", s/250, s%250, w+1) }

func workloadResource(ns string, s, w int) store.Resource {
	host, _, _ := net.SplitHostPort(endpointAddr(s, w))
	spec, _ := json.Marshal(resources.WorkloadSpec{Service: fmt.Sprintf("svc-%d", s), Identity: "spiffe://cluster.local/ns/" + ns + "/sa/svc",
		Address: host, Ports: []resources.WorkloadPort{{Port: 8080, TargetPort: 8080}}, MeshPort: 4143})
	return store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload, Spec: spec,
		Metadata: store.Metadata{Name: fmt.Sprintf("svc-%d-%d", s, w), Namespace: ns}}
}

// watcher is one proxy's stream for one service.
type watcher struct {
	conn *grpc.ClientConn
	mu   sync.Mutex
	cond *sync.Cond
	set  map[string]bool
	at   time.Time // when set last changed
	err  error
}

func watch(ctx context.Context, addr string, creds credentials.TransportCredentials, ns string, s int) *watcher {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	w := &watcher{conn: conn, set: map[string]bool{}}
	w.cond = sync.NewCond(&w.mu)
	stream, err := destinationv1.NewDestinationClient(conn).Get(ctx, &destinationv1.GetDestination{Authority: fmt.Sprintf("svc-%d.%s.svc.cluster.local:8080", s, ns)})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			u, err := stream.Recv()
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.cond.Broadcast()
				w.mu.Unlock()
				return
			}
			switch u := u.Update.(type) {
			case *destinationv1.Update_Add:
				for _, ep := range u.Add.Endpoints {
					w.set[ep.Address] = true
				}
			case *destinationv1.Update_Remove:
				for _, a := range u.Remove.Addresses {
					delete(w.set, a)
				}
			case *destinationv1.Update_NoEndpoints:
				clear(w.set)
			}
			w.at = now
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}()
	return w
}

// waitFor blocks until ok holds for the watcher's set and returns when the
// set last changed.
func (w *watcher) waitFor(ok func(map[string]bool) bool, within time.Duration) time.Time {
	deadline := time.AfterFunc(within, func() {
		w.mu.Lock()
		w.err = fmt.Errorf("no update within %v", within)
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer deadline.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for !ok(w.set) {
		if w.err != nil {
			log.Fatalf("watcher: %v", w.err)
		}
		w.cond.Wait()
	}
	return w.at
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// procKB reads one "Name: N kB" field of /proc/PID/status.
func procKB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			n, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return n
		}
	}
	return 0
}
