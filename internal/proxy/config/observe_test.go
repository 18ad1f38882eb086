package config

import (
	"strings"
	"testing"
)

func TestObservabilitySettings(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessLog != "" || c.TraceCollector != "" || c.TraceSampleRatio != 1 || c.TraceServiceName != "" {
		t.Errorf("defaults: access log %q, collector %q, ratio %v, service %q; want off, off, 1, unset",
			c.AccessLog, c.TraceCollector, c.TraceSampleRatio, c.TraceServiceName)
	}
	c, err = parse(t, []string{"--access-log=json", "--trace-collector=otel-collector.monitoring:4317", "--trace-sample-ratio=0.25"},
		map[string]string{"TRELLIS_PROXY_TRACE_SERVICE_NAME": "edge"})
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessLog != "json" || c.TraceCollector != "otel-collector.monitoring:4317" || c.TraceSampleRatio != 0.25 || c.TraceServiceName != "edge" {
		t.Errorf("got access log %q, collector %q, ratio %v, service %q", c.AccessLog, c.TraceCollector, c.TraceSampleRatio, c.TraceServiceName)
	}
}

func TestTraceServiceNameDefaultsToTheWorkloadsService(t *testing.T) {
	args := []string{"--identity=spiffe://cluster.local/ns/shop/sa/web", "--identity-addr=127.0.0.1:8080",
		"--identity-token-file=/t", "--trust-anchors=/a", "--destination-addr=127.0.0.1:8086",
		"--workload=web-0", "--workload-address=10.0.0.1", "--service-port=80"}
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{nil, "web-0"},
		{[]string{"--service=web"}, "web"},
		{[]string{"--service=web", "--trace-service-name=frontend"}, "frontend"},
	} {
		c, err := parse(t, append(args, tc.extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.TraceServiceName != tc.want {
			t.Errorf("%v: trace service name %q; want %q", tc.extra, c.TraceServiceName, tc.want)
		}
	}
}

func TestRejectsBadObservabilitySettings(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"--access-log=common", `access-log "common": must be apache or json`},
		{"--trace-collector=nohost", `trace-collector "nohost"`},
		{"--trace-collector=collector:0", `trace-collector "collector:0"`},
		{"--trace-sample-ratio=1.5", "trace-sample-ratio 1.5: must be between 0 and 1"},
		{"--trace-sample-ratio=-0.1", "trace-sample-ratio -0.1: must be between 0 and 1"},
		{"--trace-sample-ratio=NaN", "trace-sample-ratio NaN"},
	} {
		_, err := parse(t, []string{tc.arg}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v; want an error containing %q", tc.arg, err, tc.want)
		}
	}
}
