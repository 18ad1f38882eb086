package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// Options tune the demo.
type Options struct {
	RPS      int           // requests per second the generator sends to web
	FailRate float64       // share of api requests that fail
	Report   time.Duration // how often to print a summary
	Out      io.Writer
	Log      *slog.Logger
}

// Run starts the two apps, their proxies and the traffic generator, prints a
// summary every Report, and tears everything down when ctx ends.
func Run(ctx context.Context, o Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	serve := func(name string, h http.Handler) (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(2)
		go func() { defer wg.Done(); srv.Serve(ln) }()
		go func() { defer wg.Done(); <-ctx.Done(); srv.Close() }()
		return ln.Addr().String(), nil
	}
	startProxy := func(args ...string) (*app.Proxy, error) {
		fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
		finish := config.Flags(fs)
		if err := fs.Parse(append([]string{"--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}, args...)); err != nil {
			return nil, err
		}
		cfg, err := finish()
		if err != nil {
			return nil, err
		}
		p, err := app.New(cfg, o.Log)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx) }()
		return p, nil
	}

	apiAddr, err := serve("api", apiHandler(o.FailRate))
	if err != nil {
		return err
	}
	apiProxy, err := startProxy("--app-addr=" + apiAddr)
	if err != nil {
		return err
	}
	// web reaches api through its own outbound proxy, on a local port.
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	webClient := &http.Client{Timeout: 5 * time.Second}
	webAddr, err := serve("web", webHandler("http://127.0.0.1:"+strconv.Itoa(apiPort), webClient))
	if err != nil {
		return err
	}
	webProxy, err := startProxy("--app-addr="+webAddr, fmt.Sprintf("--upstream=api=%d:%s", apiPort, apiProxy.InboundAddr))
	if err != nil {
		return err
	}

	fmt.Fprintf(o.Out, `Trellis demo: generator → web-proxy → web → web-proxy (outbound) → api-proxy → api

  web, through its proxy:   curl http://%s/
  web-proxy metrics:        curl http://%s/metrics
  api-proxy metrics:        curl http://%s/metrics

Sending %d requests per second. Press Ctrl-C to stop.

`, webProxy.InboundAddr, webProxy.AdminAddr, apiProxy.AdminAddr, o.RPS)
	return generate(ctx, "http://"+webProxy.InboundAddr.String()+"/", o)
}

// generate sends o.RPS requests a second to url and prints what it saw.
func generate(ctx context.Context, url string, o Options) error {
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(max(o.RPS, 1)))
	defer tick.Stop()
	report := time.NewTicker(o.Report)
	defer report.Stop()
	var mu sync.Mutex
	var ok, failed int
	var latencies []time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-report.C:
			mu.Lock()
			fmt.Fprintln(o.Out, summary(ok, failed, latencies, o.Report))
			ok, failed, latencies = 0, 0, latencies[:0]
			mu.Unlock()
		case <-tick.C:
			go func() {
				start := time.Now()
				resp, err := client.Get(url)
				success := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				} else if errors.Is(ctx.Err(), context.Canceled) {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if success {
					ok++
				} else {
					failed++
				}
				latencies = append(latencies, time.Since(start))
			}()
		}
	}
}

func summary(ok, failed int, lat []time.Duration, window time.Duration) string {
	total := ok + failed
	if total == 0 {
		return "no requests completed"
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond) }
	return fmt.Sprintf("web: %5.1f rps  success %6.2f%%  p50 %-8v p99 %v",
		float64(total)/window.Seconds(), 100*float64(ok)/float64(total), p(0.5), p(0.99))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
