// Package proxytest runs real proxies in-process for tests: every listener
// on a free loopback port, logs to the test log, stopped at cleanup.
package proxytest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Config returns the proxy's default configuration with every listener on
// an ephemeral loopback port.
func Config(t testing.TB) *config.Config {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	finish := config.Flags(fs)
	if err := fs.Parse([]string{"--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--tap-addr=127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := finish()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Proxy is a running in-process proxy.
type Proxy struct {
	*app.Proxy
	done chan error
}

// Start runs a proxy with cfg until the test ends.
func Start(t testing.TB, cfg *config.Config) *Proxy {
	t.Helper()
	tw := &testWriter{t: t}
	t.Cleanup(tw.stop) // registered first, so it runs after the proxy stopped
	log := slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := app.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := &Proxy{Proxy: p, done: make(chan error, 1)}
	go func() { tp.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tp.done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop within 10s")
		}
	})
	WaitReady(t, "http://"+p.AdminAddr.String())
	return tp
}

// Done is closed with Run's result when the proxy has stopped.
func (p *Proxy) Done() <-chan error { return p.done }

// WaitReady polls adminURL/ready until it answers 200.
func WaitReady(t testing.TB, adminURL string) { testkit.WaitReady(t, adminURL+"/ready") }

// testWriter sends log lines to the test log until the test is over;
// lines from goroutines that outlive the test are dropped.
type testWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
