package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parse(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	finish := Flags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return finish()
}

func TestDefaults(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.InboundAddr != "0.0.0.0:4143" || c.OutboundAddr != "127.0.0.1:4140" || c.AdminAddr != "0.0.0.0:4191" {
		t.Errorf("listeners %s %s %s", c.InboundAddr, c.OutboundAddr, c.AdminAddr)
	}
	if c.DetectTimeout != 10*time.Second || c.ShutdownGracePeriod != 120*time.Second {
		t.Errorf("detect %v grace %v", c.DetectTimeout, c.ShutdownGracePeriod)
	}
	for _, p := range []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211} {
		if !c.OpaquePorts[p] {
			t.Errorf("port %d not opaque by default", p)
		}
	}
	if len(c.OpaquePorts) != 8 {
		t.Errorf("%d opaque ports by default", len(c.OpaquePorts))
	}
}

func TestEnvironmentAndFlagPrecedence(t *testing.T) {
	c, err := parse(t, []string{"--detect-timeout=3s"}, map[string]string{
		"TRELLIS_PROXY_DETECT_TIMEOUT":  "7s",
		"TRELLIS_PROXY_CONNECT_TIMEOUT": "250ms",
		"TRELLIS_PROXY_UPSTREAM":        "a=9001:127.0.0.1:80, b=9002:db.internal:5432",
		"TRELLIS_PROXY_OPAQUE_PORTS":    "1234,5678",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.DetectTimeout != 3*time.Second {
		t.Errorf("flag should win over env: %v", c.DetectTimeout)
	}
	if c.ConnectTimeout != 250*time.Millisecond {
		t.Errorf("env not applied: %v", c.ConnectTimeout)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[1] != (Upstream{Name: "b", LocalPort: 9002, Target: "db.internal:5432"}) {
		t.Errorf("upstreams %v", c.Upstreams)
	}
	if !c.OpaquePorts[1234] || c.OpaquePorts[3306] {
		t.Errorf("opaque ports replace the default list: %v", c.OpaquePorts)
	}
}

func TestMeshSettings(t *testing.T) {
	c, err := parse(t, []string{
		"--identity=spiffe://cluster.local/ns/default/sa/web", "--identity-addr=127.0.0.1:8080",
		"--identity-token-file=/run/token", "--trust-anchors=/run/anchors.pem",
		"--upstream=api=9000:10.0.0.2:8080@spiffe://cluster.local/ns/default/sa/api",
		"--endpoint-identity=10.0.0.3=spiffe://cluster.local/ns/db/sa/pg",
		"--endpoint-identity=10.0.0.4:5432=spiffe://cluster.local/ns/db/sa/pg2",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams[0]; u.Identity != "spiffe://cluster.local/ns/default/sa/api" || u.Target != "10.0.0.2:8080" {
		t.Errorf("upstream %+v", u)
	}
	if c.EndpointIdentities["10.0.0.3"] == "" || c.EndpointIdentities["10.0.0.4:5432"] == "" || c.MeshPort != 4143 {
		t.Errorf("endpoints %v mesh port %d", c.EndpointIdentities, c.MeshPort)
	}
}

func TestUpstreamsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams")
	os.WriteFile(path, []byte("# routes\nweb=9001:10.0.0.1:8080\n\n db=9002:10.0.0.2:5432 # postgres\n"), 0o600)
	c, err := parse(t, []string{"--upstreams-file", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].Name != "web" || c.Upstreams[1].Target != "10.0.0.2:5432" {
		t.Fatalf("upstreams %v", c.Upstreams)
	}
}

func TestRejectsBadValuesNamingTheSetting(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--inbound-addr=nope"}, want: "inbound-addr"},
		{args: []string{"--admin-addr=1.2.3.4:99999"}, want: "admin-addr"},
		{args: []string{"--app-addr=:x"}, want: "app-addr"},
		{args: []string{"--detect-timeout=0s"}, want: "detect-timeout"},
		{args: []string{"--shutdown-grace-period=-1s"}, want: "shutdown-grace-period"},
		{args: []string{"--max-header-bytes=10"}, want: "max-header-bytes"},
		{args: []string{"--log-level=loud"}, want: "log-level"},
		{args: []string{"--log-format=xml"}, want: "log-format"},
		{args: []string{"--upstream=web"}, want: "upstream"},
		{args: []string{"--upstream=web=70000:a:1"}, want: "local port"},
		{args: []string{"--upstream=a=9000:h:1", "--upstream=b=9000:h:2"}, want: "already used"},
		{args: []string{"--upstreams-file=/does/not/exist"}, want: "upstreams-file"},
		{env: map[string]string{"TRELLIS_PROXY_IDLE_TIMEOUT": "soon"}, want: "TRELLIS_PROXY_IDLE_TIMEOUT"},
		{env: map[string]string{"TRELLIS_PROXY_OPAQUE_PORTS": "80,http"}, want: "TRELLIS_PROXY_OPAQUE_PORTS"},
		{args: []string{"--upstream=web=9000:h:1@not-a-spiffe-id"}, want: "identity"},
		{args: []string{"--upstream=web=9000:h:1@spiffe://cluster.local/ns/a/sa/b"}, want: "upstream web names a peer identity"},
		{args: []string{"--identity=spiffe://cluster.local/ns/a/sa/b"}, want: "identity-addr is required"},
		{args: []string{"--trust-anchors=/x"}, want: "trust-anchors is set but identity is not"},
		{args: []string{"--identity=spiffe://cluster.local/ns/a/sa/b", "--identity-addr=h:1", "--identity-token-file=/t", "--trust-anchors=/x", "--trust-anchors-pem=x"}, want: "both set"},
		{env: map[string]string{"TRELLIS_PROXY_TRUST_ANCHORS_PEM": "not pem"}, args: []string{"--identity=spiffe://cluster.local/ns/a/sa/b", "--identity-addr=h:1", "--identity-token-file=/t"}, want: "trust-anchors-pem: no PEM block"},
		{args: []string{"--endpoint-identity=10.0.0.1"}, want: "endpoint-identity"},
		{args: []string{"--endpoint-identity=host:80=spiffe://cluster.local/ns/a/sa/b"}, want: "neither IP"},
		{args: []string{"--mesh-port=70000"}, want: "mesh-port"},
		{args: []string{"--default-inbound-policy=allow"}, want: `default-inbound-policy "allow": must be one of all-unauthenticated`},
		{args: []string{"--probe-networks=10.0.0.1"}, want: `probe-networks "10.0.0.1": "10.0.0.1" is not a network such as 10.0.0.0/8`},
		{args: []string{"--probe-paths=/live,ready"}, want: `probe-paths "/live,ready": "ready" is not a path such as /healthz`},
		{args: []string{"--cluster-networks=10.0.0.0/8,10.1"}, want: `cluster-networks "10.0.0.0/8,10.1": "10.1" is not a network`},
		{args: []string{"--require-identity-inbound-ports=80,x"}, want: "require-identity-inbound-ports"},
		{args: []string{"--failure-accrual=sometimes"}, want: "failure accrual mode"},
		{args: []string{"--failure-accrual-http-statuses=500-700"}, want: "failure-accrual-http-statuses"},
		{args: []string{"--failure-accrual-grpc-codes=unavailable"}, want: "failure-accrual-grpc-codes"},
		{args: []string{"--failfast-timeout=0s"}, want: "failfast-timeout"},
		{args: []string{"--failure-accrual-consecutive=0"}, want: "must be above 0"},
		{args: []string{"--failure-accrual-success-rate=0"}, want: "must be above 0"},
		{args: []string{"--failure-accrual-window=2m"}, want: "at most 1m4s"},
		{args: []string{"--cluster-domain=.cluster.local"}, want: "cluster-domain"},
		{args: []string{"--workload=web-0"}, want: "workload needs destination-addr"},
		{args: []string{"--service-port=80"}, want: "service-port is set but workload is not"},
		{args: []string{"--service-port=http:80", "--service-port=http:81"}, want: `service-port "http:81": the name http is given to another port too`},
		{args: []string{"--destination-addr=127.0.0.1:8086"}, want: "destination-addr needs identity"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := parse(t, tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want one naming %q", err, tt.want)
			}
		})
	}
}

func FuzzParseUpstream(f *testing.F) {
	f.Add("web=9000:127.0.0.1:8080")
	f.Add("x=1:[::1]:80")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUpstream(s)
		if err != nil {
			return
		}
		// (Local port 0 is allowed: the proxy binds a free one and names
		// it in --ready-file.)
		if u.Name == "" || u.Target == "" {
			t.Fatalf("accepted %q as %+v", s, u)
		}
		again, err := ParseUpstream(u.String())
		if err != nil || again != u {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

// A service port may name the application's port; a bad name is refused,
// naming the rule.
func TestParseServicePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ServicePort
		err  string
	}{
		{in: "8080", want: ServicePort{Port: 8080, TargetPort: 8080}},
		{in: "80=8080/grpc", want: ServicePort{Port: 80, TargetPort: 8080, Protocol: "grpc"}},
		{in: "grpc:80=8080/grpc", want: ServicePort{Port: 80, TargetPort: 8080, Protocol: "grpc", Name: "grpc"}},
		{in: "admin-http:9000", want: ServicePort{Port: 9000, TargetPort: 9000, Name: "admin-http"}},
		{in: "Grpc:80", err: `port name "Grpc" must be`},
		{in: "8080:80", err: `port name "8080" must be`},
		{in: "a-very-long-port-name:80", err: `port name "a-very-long-port-name" must be at most 15`},
		{in: "grpc:", err: `"grpc:"`},
	} {
		got, err := ParseServicePort(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
