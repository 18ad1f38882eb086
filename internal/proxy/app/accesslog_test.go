package app_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// A request through two meshed proxies is logged by both: the client-side
// proxy in Apache format, the server-side one in JSON with the client's
// proven identity.
func TestAccessLogBothFormats(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	app := identityEcho(t)

	in := proxytest.Config(t)
	in.AppAddr = app
	server := ids.Join(t, in, "shop", "api")
	jsonLog := &testkit.SyncBuffer{}
	in.AccessLog, in.AccessLogOutput = "json", jsonLog
	b := startStoppable(t, in)

	out := proxytest.Config(t)
	client := ids.Join(t, out, "shop", "web")
	out.MeshPort = port(b.InboundAddr.String())
	entry := testkit.FreeAddr(t)
	out.Upstreams = []config.Upstream{{Name: "api", LocalPort: port(entry), Target: app, Identity: server}}
	apacheLog := &testkit.SyncBuffer{}
	out.AccessLog, out.AccessLogOutput = "apache", apacheLog
	a := startStoppable(t, out)

	c, br := raw(t, entry, "GET /hello?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8.5.0\r\nReferer: http://shop.example/\r\n\r\n")
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != http.StatusOK || body != "echo:" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	clientAddr := c.LocalAddr().String()
	c.Close()
	a.stop(t)
	b.stop(t) // both logs are flushed now

	want := regexp.MustCompile(`^` + regexp.QuoteMeta(clientAddr) + ` - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /hello\?x=1 HTTP/1\.1" 200 5 "http://shop\.example/" "curl/8\.5\.0" \d+ outbound$`)
	if got := strings.TrimSuffix(apacheLog.String(), "\n"); !want.MatchString(got) {
		t.Errorf("client-side proxy's access log:\n%s\nwant one line matching\n%s", got, want)
	}

	lines := strings.Split(strings.TrimSuffix(jsonLog.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("server-side proxy's access log:\n%s\nwant one line", jsonLog.String())
	}
	var l map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
		t.Fatalf("%q: %v", lines[0], err)
	}
	for k, v := range map[string]any{
		"direction": "inbound", "client.id": client, "host": "shop.example", "method": "GET", "uri": "/hello?x=1",
		"version": "HTTP/1.1", "user_agent": "curl/8.5.0", "referer": "http://shop.example/", "status": 200.0, "response_bytes": 5.0,
	} {
		if l[k] != v {
			t.Errorf("%s = %#v; want %#v (line %s)", k, l[k], v, lines[0])
		}
	}
	if addr, _ := l["client.addr"].(string); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("client.addr %q; want the client-side proxy's address", addr)
	}
	if ns, _ := l["total_ns"].(float64); ns <= 0 {
		t.Errorf("total_ns %v", l["total_ns"])
	}
	if ts, _ := l["timestamp"].(string); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`).MatchString(ts) {
		t.Errorf("timestamp %q", ts)
	}
	if _, traced := l["trace_id"]; traced {
		t.Errorf("trace_id in the line of a proxy without tracing: %s", lines[0])
	}
}
