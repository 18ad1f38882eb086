package plane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// startPlane runs the whole control plane in-process.
func startPlane(t *testing.T) (*Plane, *localapi.Client) {
	t.Helper()
	var o Options
	fs := pflag.NewFlagSet("plane", pflag.ContinueOnError)
	o.Flags(fs)
	dir := t.TempDir()
	if err := fs.Parse([]string{"--addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--data-dir=" + dir, "--lease-ttl=1s"}); err != nil {
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
func proxy(t *testing.T, p *Plane, api *localapi.Client, sa string, args ...string) (*app.Proxy, context.CancelFunc) {
	t.Helper()
	id := "spiffe://cluster.local/ns/default/sa/" + sa
	tok, err := api.JoinToken(context.Background(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok), 0o600)
	st := p.Status()
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	finish := config.Flags(fs)
	base := []string{"--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0",
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

// backend serves its name and the caller's proven identity.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.Header.Get("l5d-client-id"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func waitWorkloads(t *testing.T, api *localapi.Client, n int) {
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

// Two instances register, a client reaches them by service name over mTLS
// with per-request balancing; one leaves and traffic moves to the other.
func TestDiscoveryRegistrationAndFailover(t *testing.T) {
	p, api := startPlane(t)
	var stops []context.CancelFunc
	for i := range 2 {
		name := "echo-" + strconv.Itoa(i)
		addr := backend(t, name)
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
	if seen["echo-0"] < 10 || seen["echo-1"] < 10 {
		t.Fatalf("requests per instance %v; want both used", seen)
	}

	// echo-0 shuts down (deregistering) under load.
	var failures, after atomic.Int64
	var stopped atomic.Int64 // unix nanoseconds when echo-0 stopped
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
					} else if strings.HasPrefix(body, "echo-0") {
						after.Add(1)
					}
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	stops[0]()
	stopped.Store(time.Now().UnixNano())
	waitWorkloads(t, api, 1) // deregistered at once, not when the lease lapses
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()
	if failures.Load() != 0 || after.Load() != 0 {
		t.Fatalf("from 2s after echo-0 stopped: %d failed requests, %d answered by echo-0", failures.Load(), after.Load())
	}
}
