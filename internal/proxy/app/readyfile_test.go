package app_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// A proxy told to bind port 0 everywhere says, in its ready file, which
// ports it got: the ones it serves on.
func TestReadyFileNamesTheBoundPorts(t *testing.T) {
	cfg := proxytest.Config(t)
	cfg.AppAddr = testkit.EchoServer(t)
	cfg.Upstreams = []config.Upstream{{Name: "a", LocalPort: 0, Target: cfg.AppAddr}, {Name: "b", LocalPort: 0, Target: cfg.AppAddr}}
	cfg.ReadyFile = filepath.Join(t.TempDir(), "addresses.json")
	p := proxytest.Start(t, cfg)
	var got struct {
		Inbound, Outbound, Admin string
		Upstreams                map[string]string
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(cfg.ReadyFile)
		if err == nil {
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready file within 5s")
		}
	}
	want := map[string]string{"inbound": p.InboundAddr.String(), "outbound": p.OutboundAddr.String(), "admin": p.AdminAddr.String(),
		"a": p.UpstreamAddrs["a"].String(), "b": p.UpstreamAddrs["b"].String()}
	have := map[string]string{"inbound": got.Inbound, "outbound": got.Outbound, "admin": got.Admin, "a": got.Upstreams["a"], "b": got.Upstreams["b"]}
	for k, v := range want {
		if have[k] != v || port(v) == 0 {
			t.Errorf("%s: the file says %q, the proxy listens on %s", k, have[k], v)
		}
	}
}
