package plane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// startPlane runs the whole control plane in-process, with extra flags.
func startPlane(t testing.TB, extra ...string) (*Plane, *localapi.Client) {
	t.Helper()
	var o Options
	fs := pflag.NewFlagSet("plane", pflag.ContinueOnError)
	o.Flags(fs)
	dir := t.TempDir()
	if err := fs.Parse(append([]string{"--addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--data-dir=" + dir, "--lease-ttl=1s"}, extra...)); err != nil {
		t.Fatal(err)
	}
	p, err := New(o, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return p, localapi.NewClient(filepath.Join(dir, localapi.SocketName))
}

// proxy starts an in-process proxy with args, joined to the mesh as sa.
func proxy(t testing.TB, p *Plane, api *localapi.Client, sa string, args ...string) (*app.Proxy, context.CancelFunc) {
	t.Helper()
	id := "spiffe://cluster.local/ns/default/sa/" + sa
	tok, err := api.JoinToken(context.Background(), id, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok), 0o600)
	st := p.Status()
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	finish := config.Flags(fs)
	base := []string{"--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--tap-addr=127.0.0.1:0",
		"--identity=" + id, "--identity-addr=" + st.ControlAddr, "--identity-token-file=" + file, "--trust-anchors=" + st.TrustAnchor,
		"--destination-addr=" + st.ControlAddr, "--shutdown-grace-period=2s"}
	if err := fs.Parse(append(base, args...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := finish()
	if err != nil {
		t.Fatal(err)
	}
	px, err := app.New(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { px.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	testkit.WaitReady(t, "http://"+px.AdminAddr.String()+"/ready")
	return px, stop
}

// backend serves its name and the caller's proven identity, after delay.
func backend(t *testing.T, name string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		fmt.Fprintf(w, "%s %s", name, r.Header.Get("l5d-client-id"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func waitWorkloads(t testing.TB, api *localapi.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		wls, err := api.List(context.Background(), resources.KindWorkload, "default")
		if err == nil && len(wls) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workloads registered (%v); want %d", len(wls), err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two instances register, a client reaches them by service name over mTLS;
// one leaves under load (stopping it first, whichever is serving) and
// traffic moves to the other.
func TestDiscoveryRegistrationAndFailover(t *testing.T) {
	p, api := startPlane(t)
	var stops []context.CancelFunc
	for i := range 2 {
		name := "echo-" + strconv.Itoa(i)
		addr := backend(t, name, 0)
		_, port, _ := net.SplitHostPort(addr)
		_, stop := proxy(t, p, api, "echo", "--app-addr="+addr, "--workload="+name, "--service=echo", "--service-port=8080="+port)
		stops = append(stops, stop)
	}
	waitWorkloads(t, api, 2)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")

	get := func() (string, error) {
		resp, err := http.Get("http://" + local + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return string(b), nil
	}
	seen := map[string]int{}
	for range 100 {
		body, err := get()
		if err != nil {
			t.Fatal(err)
		}
		name, client, _ := strings.Cut(body, " ")
		if client != "spiffe://cluster.local/ns/default/sa/client" {
			t.Fatalf("the backend saw l5d-client-id %q", client)
		}
		seen[name]++
	}
	if seen["echo-0"]+seen["echo-1"] != 100 {
		t.Fatalf("requests per instance %v", seen)
	}
	// Peak-EWMA balancing keeps sequential traffic on the instance it has
	// measured fast; the other takes over when it leaves, below.

	// The instance that served most shuts down (deregistering) under load.
	victim, other := 0, 1
	if seen["echo-1"] > seen["echo-0"] {
		victim, other = 1, 0
	}
	victimName := "echo-" + strconv.Itoa(victim)
	var failures, after, survivor atomic.Int64
	var stopped atomic.Int64 // unix nanoseconds when the victim stopped
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				body, err := get()
				if s := stopped.Load(); s != 0 && time.Since(time.Unix(0, s)) > 2*time.Second {
					if err != nil {
						failures.Add(1)
						t.Log(err)
					} else if strings.HasPrefix(body, victimName) {
						after.Add(1)
					} else {
						survivor.Add(1)
					}
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	stops[victim]()
	stopped.Store(time.Now().UnixNano())
	waitWorkloads(t, api, 1) // deregistered at once, not when the lease lapses
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()
	if failures.Load() != 0 || after.Load() != 0 || survivor.Load() == 0 {
		t.Fatalf("from 2s after %s stopped: %d failed requests, %d answered by it, %d by echo-%d", victimName, failures.Load(), after.Load(), survivor.Load(), other)
	}
}

// Three instances, one 250 ms slower: with real proxies and the real
// control plane, after warm-up it receives under 10% of the requests.
// (With 50 ms, a loaded machine — the soak's — slowed the fast instances'
// eight-deep queues enough that balancing by latency × load rightly sent
// the idle slow one 12.8%: the gap must stay clear of scheduling delays.)
func TestSlowInstanceGetsLittleTraffic(t *testing.T) {
	p, api := startPlane(t)
	for i, delay := range []time.Duration{0, 0, 250 * time.Millisecond} {
		name := "echo-" + strconv.Itoa(i)
		addr := backend(t, name, delay)
		_, port, _ := net.SplitHostPort(addr)
		proxy(t, p, api, "echo", "--app-addr="+addr, "--workload="+name, "--service=echo", "--service-port=8080="+port)
	}
	waitWorkloads(t, api, 3)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for n := range 250 {
				resp, err := http.Get("http://" + local + "/")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				name, _, _ := strings.Cut(string(b), " ")
				if n >= 50 { // after warm-up
					mu.Lock()
					counts[name]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	total := counts["echo-0"] + counts["echo-1"] + counts["echo-2"]
	if share := float64(counts["echo-2"]) / float64(total); total != 1600 || share >= 0.10 {
		t.Fatalf("after warm-up the slow instance got %.1f%% of %d requests (%v)", 100*share, total, counts)
	}
	t.Logf("requests per instance after warm-up: %v", counts)
}

// An instance that starts failing is ejected after 7 failures in a row
// and readmitted, after its backoff and a successful probation request,
// once it recovers.
func TestFailingInstanceIsEjectedAndReadmitted(t *testing.T) {
	p, api := startPlane(t)
	var failing atomic.Bool
	var badHits atomic.Int64
	for i := range 2 {
		name := "echo-" + strconv.Itoa(i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if i == 0 {
				badHits.Add(1)
				if failing.Load() {
					http.Error(w, "broken", http.StatusInternalServerError)
					return
				}
			} else {
				// Slower than the 30 ms a new endpoint is assumed to take, and
				// than a loaded machine's stalls, so echo-0 gets traffic
				// whenever it may.
				time.Sleep(150 * time.Millisecond)
			}
			fmt.Fprint(w, name)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, "echo", "--app-addr="+ln.Addr().String(), "--workload="+name, "--service=echo", "--service-port=8080="+port)
	}
	waitWorkloads(t, api, 2)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	get := func() int {
		resp, err := http.Get("http://" + local + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 20 {
		get()
	}
	if badHits.Load() == 0 {
		t.Fatal("the fast instance got no traffic")
	}
	failing.Store(true)
	badHits.Store(0)
	var failed []int
	var ejected time.Time
	for n := range 27 {
		if get() != http.StatusOK {
			failed = append(failed, n)
		}
		if n == 6 {
			ejected = time.Now()
		}
	}
	// 7 in a row eject it; then one probation request per backoff (0.5–1 s,
	// 1–2 s, 2–4 s, …: the k-th no sooner than 0.5 × (2^k − 1) s after the
	// ejection).
	probations := len(failed) - 7
	allowed := int(math.Log2(time.Since(ejected).Seconds()/0.5 + 1))
	if len(failed) < 7 || failed[6] != 6 || probations > allowed || int64(len(failed)) != badHits.Load() {
		t.Fatalf("while echo-0 fails: requests %v failed, %d reached it; want the first 7, then at most %d probations in %v",
			failed, badHits.Load(), allowed, time.Since(ejected).Round(time.Millisecond))
	}
	failing.Store(false)
	badHits.Store(0)
	deadline := time.Now().Add(time.Duration(1<<probations)*time.Second + 2*time.Second) // the next backoff: at most 2^probations s
	for badHits.Load() == 0 {
		if get() != http.StatusOK {
			t.Fatal("a request failed after echo-0 recovered")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recovered instance was not readmitted within %v", time.Duration(1<<probations)*time.Second+2*time.Second)
		}
	}
	for range 20 {
		get()
	}
	if badHits.Load() < 10 {
		t.Errorf("after readmission echo-0 got %d of 20 requests", badHits.Load())
	}
}

// A mesh service name never leaves the mesh as addressed: a request to one
// whose first instance has not registered yet waits for it and is served
// over mTLS; one to a name no instance ever serves fails fast with 503 (not
// a plaintext attempt at the name).
func TestMeshNameBeforeItsServiceExists(t *testing.T) {
	p, api := startPlane(t)
	late, _ := clientProxy(t, p, api, "late", "--failfast-timeout=20s")
	ghost, _ := clientProxy(t, p, api, "ghost", "--failfast-timeout=300ms")

	type result struct {
		r   reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + late + "/")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{r: reply{resp.StatusCode, string(b), resp.Header}}
	}()
	time.Sleep(300 * time.Millisecond) // the request is waiting (not synchronisation: it must wait however long this is)
	select {
	case res := <-done:
		t.Fatalf("answered before the service existed: %+v", res)
	default:
	}
	addr := backend(t, "late-0", 0)
	_, port, _ := net.SplitHostPort(addr)
	proxy(t, p, api, "late", "--app-addr="+addr, "--workload=late-0", "--service=late", "--service-port=8080="+port)
	res := <-done
	if res.err != nil || res.r.status != http.StatusOK || res.r.body != "late-0 spiffe://cluster.local/ns/default/sa/client" {
		t.Fatalf("the waiting request: %+v", res)
	}

	start := time.Now()
	r := call(t, http.DefaultClient, http.MethodGet, "http://"+ghost+"/", nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("l5d-proxy-error") != "no such service" {
		t.Fatalf("a name no instance serves: %d %q %q", r.status, r.header.Get("l5d-proxy-error"), r.body)
	}
	t.Logf("a name no instance serves: 503 after %v", time.Since(start).Round(time.Millisecond))
}
