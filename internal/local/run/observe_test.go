package run

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// The access log and tracing options reach the proxy's command line, and
// the proxy accepts it.
func TestProxyArgsPassAccessLogAndTracing(t *testing.T) {
	for _, tc := range []struct{ accessLog, collector string }{{"", ""}, {"json", "127.0.0.1:4317"}, {"apache", ""}} {
		o := &Options{Name: "web", Namespace: "default", Service: "web", Port: 8080, ProxyLogLevel: "warn", ProxyExe: "/usr/bin/trellis-proxy",
			AccessLog: tc.accessLog, TraceCollector: tc.collector}
		in := &instance{name: "web-0", o: o, upstream: map[string]string{},
			st: localapi.Status{TrustDomain: "cluster.local", ControlAddr: "127.0.0.1:8086", ClusterDomain: "cluster.local"}}
		cfg := proxyConfig(t, in)
		if cfg.AccessLog != tc.accessLog || cfg.TraceCollector != tc.collector || cfg.TraceServiceName != "web" {
			t.Errorf("%+v: proxy got access log %q, collector %q, trace service %q", tc, cfg.AccessLog, cfg.TraceCollector, cfg.TraceServiceName)
		}
	}
}

// proxyConfig is the configuration the proxy of explicit-mode instance in
// reads from the command line trellis run gives it.
func proxyConfig(t *testing.T, in *instance) *config.Config {
	t.Helper()
	in.setupExplicit()
	args, err := in.proxyArgs()
	if err != nil {
		t.Fatal(err)
	}
	if len(args) < 2 || args[0] != in.o.ProxyExe {
		t.Fatalf("args %v, want %s and its flags", args, in.o.ProxyExe)
	}
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	finish := config.Flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("the proxy refuses %v: %v", args, err)
	}
	cfg, err := finish()
	if err != nil {
		t.Fatalf("the proxy refuses %v: %v", args, err)
	}
	return cfg
}

func TestValidateAccessLogAndTracing(t *testing.T) {
	base := func() Options {
		return Options{Name: "web", Port: 8080, Replicas: 1, Command: []string{"true"}}
	}
	for _, tc := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.AccessLog = "common" }, `--access-log "common"`},
		{func(o *Options) { o.TraceCollector = "collector" }, `--trace-collector "collector"`},
	} {
		o := base()
		tc.mutate(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v; want an error containing %q", err, tc.want)
		}
	}
	o := base()
	o.AccessLog, o.TraceCollector = "json", "otel.monitoring:4317"
	if err := o.Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}
