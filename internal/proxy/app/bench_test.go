package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
)

// BenchmarkHTTP1OneHop measures a keep-alive HTTP/1.1 request through one
// proxy (client → inbound → app), all in this process. The process-level
// comparison with nginx and HAProxy is bench/run; this one is for profiling:
//
//	go test -run XXX -bench HTTP1OneHop -benchmem -cpuprofile cpu.out ./internal/proxy/app/
func BenchmarkHTTP1OneHop(b *testing.B) {
	payload := strings.Repeat("x", 64)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "64")
		io.WriteString(w, payload)
	}))
	defer app.Close()
	cfg := proxytest.Config(b)
	cfg.AppAddr = app.Listener.Addr().String()
	cfg.LogLevel = "warn"
	p := proxytest.Start(b, cfg)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + p.InboundAddr.String() + "/"
	benchGets(b, client, url)
}

// BenchmarkH2OneHop is BenchmarkHTTP1OneHop over h2c: client and
// application both speak HTTP/2 (the proxy's ReverseProxy path).
func BenchmarkH2OneHop(b *testing.B) {
	payload := strings.Repeat("x", 64)
	var p2 http.Protocols
	p2.SetUnencryptedHTTP2(true)
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "64")
		io.WriteString(w, payload)
	}))
	app.Config.Protocols = &p2
	app.Start()
	defer app.Close()
	cfg := proxytest.Config(b)
	cfg.AppAddr = app.Listener.Addr().String()
	cfg.LogLevel = "warn"
	p := proxytest.Start(b, cfg)
	client := &http.Client{Transport: &http.Transport{Protocols: &p2}}
	url := "http://" + p.InboundAddr.String() + "/"
	benchGets(b, client, url)
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
