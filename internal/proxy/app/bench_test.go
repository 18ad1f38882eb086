package app_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// BenchmarkHTTP1OneHop measures a keep-alive HTTP/1.1 request through one
// proxy (client → inbound → app), all in this process. The process-level
// comparison with nginx and HAProxy is bench/run; this one is for profiling:
//
//	go test -run XXX -bench HTTP1OneHop -benchmem -cpuprofile cpu.out ./internal/proxy/app/
func BenchmarkHTTP1OneHop(b *testing.B) {
	cfg := proxytest.Config(b)
	cfg.AppAddr = smallAnswers(b)
	cfg.LogLevel = "warn"
	p := proxytest.Start(b, cfg)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + p.InboundAddr.String() + "/"
	benchGets(b, client, url)
}

// BenchmarkHTTP1MeshTwoHops is BenchmarkHTTP1OneHop through two proxies
// and the mesh between them: client → outbound proxy → HTTP/2 over mTLS →
// inbound proxy → app. Its allocations per request are the GC's work that
// bench/run's two-hop p99 at 1,000 rps pays for:
//
//	go test -run XXX -bench MeshTwoHops -benchmem -memprofile mem.out ./internal/proxy/app/
func BenchmarkHTTP1MeshTwoHops(b *testing.B) {
	ids := meshtest.StartIdentity(b, time.Hour)
	in := proxytest.Config(b)
	in.AppAddr = smallAnswers(b)
	in.LogLevel = "warn"
	server := ids.Join(b, in, "shop", "api")
	p := proxytest.Start(b, in)
	out := proxytest.Config(b)
	out.LogLevel = "warn"
	ids.Join(b, out, "shop", "web")
	out.MeshPort = port(p.InboundAddr.String())
	out.Upstreams = []config.Upstream{{Name: "api", LocalPort: port(testkit.FreeAddr(b)), Target: in.AppAddr, Identity: server}}
	q := proxytest.Start(b, out)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	benchGets(b, client, "http://"+q.UpstreamAddrs["api"].String()+"/")
}

// smallAnswers starts an HTTP/1.1 application answering every request with
// 64 bytes, until the benchmark ends, and returns its address.
func smallAnswers(b *testing.B) string {
	payload := strings.Repeat("x", 64)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "64")
		io.WriteString(w, payload)
	}))
	b.Cleanup(app.Close)
	return app.Listener.Addr().String()
}

// BenchmarkH2OneHop is BenchmarkHTTP1OneHop over h2c: client and
// application both speak HTTP/2 (the proxy's ReverseProxy path).
func BenchmarkH2OneHop(b *testing.B) {
	payload := strings.Repeat("x", 64)
	client, url := h2cThroughProxy(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "64")
		io.WriteString(w, payload)
	})
	benchGets(b, client, url)
}

// BenchmarkH2UploadOneHop measures a 16 MiB h2c upload through one proxy:
// the cost of the proxy's HTTP/2 read path per byte (frame size, buffering).
func BenchmarkH2UploadOneHop(b *testing.B) {
	client, url := h2cThroughProxy(b, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	body := bytes.Repeat([]byte("x"), 16<<20)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// h2cThroughProxy starts an h2c-only application serving h and a proxy in
// front of it, and returns an h2c client and the proxy's URL.
func h2cThroughProxy(b *testing.B, h http.HandlerFunc) (*http.Client, string) {
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	app := httptest.NewUnstartedServer(h)
	app.Config.Protocols = &p2
	app.Start()
	b.Cleanup(app.Close)
	cfg := proxytest.Config(b)
	cfg.AppAddr = app.Listener.Addr().String()
	cfg.LogLevel = "warn"
	p := proxytest.Start(b, cfg)
	return &http.Client{Transport: &http.Transport{Protocols: &p2}}, "http://" + p.InboundAddr.String() + "/"
}

// benchGets measures GETs of url by client, in parallel.
func benchGets(b *testing.B, client *http.Client, url string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
