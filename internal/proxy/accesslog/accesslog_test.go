package accesslog

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

var t0 = time.Date(2022, 8, 23, 20, 28, 20, 71809491, time.UTC)

// steppingClock answers t0 and t0+d by turns: a request's start and end.
func steppingClock(d time.Duration) func() time.Time {
	var mu sync.Mutex
	n := 0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%2 == 0 {
			return t0.Add(d)
		}
		return t0
	}
}

// serve runs the layer in a real HTTP server whose connections look like
// meta, in front of app, and returns its URL.
func serve(t *testing.T, l *Logger, meta *transport.Meta, traceID string, app http.HandlerFunc) string {
	layer := l.Layer(app)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := transport.WithMeta(r.Context(), meta)
		if traceID != "" {
			tid, err := oteltrace.TraceIDFromHex(traceID)
			if err != nil {
				t.Error(err)
			}
			ctx = oteltrace.ContextWithSpanContext(ctx, oteltrace.NewSpanContext(oteltrace.SpanContextConfig{TraceID: tid, SpanID: oteltrace.SpanID{1}}))
		}
		layer.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string, header map[string]string) {
	t.Helper()
	testkit.Get(t, url, "shop.example:8080", header)
}

func created(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, "hello")
}

var meshed = &transport.Meta{
	Direction: transport.Inbound,
	Client:    netip.MustParseAddrPort("192.0.2.10:51160"),
	ClientID:  "spiffe://cluster.local/ns/shop/sa/web",
}

func TestLines(t *testing.T) {
	for _, tc := range []struct {
		name, format, traceID string
		meta                  *transport.Meta
		header                map[string]string
		want                  string
	}{
		{
			name: "apache", format: Apache, meta: meshed,
			header: map[string]string{"User-Agent": "curl/8.5.0", "Referer": "http://shop.example/"},
			want:   `192.0.2.10:51160 spiffe://cluster.local/ns/shop/sa/web - [23/Aug/2022:20:28:20 +0000] "GET /items?id=7 HTTP/1.1" 201 5 "http://shop.example/" "curl/8.5.0" 1234 inbound` + "\n",
		},
		{
			name: "apache without identity or headers", format: Apache,
			meta:   &transport.Meta{Direction: transport.Outbound, Client: netip.MustParseAddrPort("127.0.0.1:40000")},
			header: map[string]string{"User-Agent": ""},
			want:   `127.0.0.1:40000 - - [23/Aug/2022:20:28:20 +0000] "GET /items?id=7 HTTP/1.1" 201 5 "-" "-" 1234 outbound` + "\n",
		},
		{
			name: "apache escapes", format: Apache, meta: meshed,
			header: map[string]string{"User-Agent": `evil" agent\` + "\t\xff"},
			want:   `192.0.2.10:51160 spiffe://cluster.local/ns/shop/sa/web - [23/Aug/2022:20:28:20 +0000] "GET /items?id=7 HTTP/1.1" 201 5 "-" "evil\" agent\\\x09\xff" 1234 inbound` + "\n",
		},
		{
			name: "json", format: JSON, meta: meshed,
			header: map[string]string{"User-Agent": "curl/8.5.0"},
			want:   `{"timestamp":"2022-08-23T20:28:20.071809491Z","direction":"inbound","client.addr":"192.0.2.10:51160","client.id":"spiffe://cluster.local/ns/shop/sa/web","host":"shop.example:8080","method":"GET","uri":"/items?id=7","version":"HTTP/1.1","user_agent":"curl/8.5.0","referer":"","status":201,"response_bytes":5,"total_ns":1234567}` + "\n",
		},
		{
			name: "json traced", format: JSON, meta: meshed, traceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			header: map[string]string{"User-Agent": "a \"quoted\"\tagent \xff \u2028"},
			want:   `{"timestamp":"2022-08-23T20:28:20.071809491Z","direction":"inbound","client.addr":"192.0.2.10:51160","client.id":"spiffe://cluster.local/ns/shop/sa/web","host":"shop.example:8080","method":"GET","uri":"/items?id=7","version":"HTTP/1.1","user_agent":"a \"quoted\"\tagent \ufffd \u2028","referer":"","status":201,"response_bytes":5,"total_ns":1234567,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			l, err := New(Options{Format: tc.format, Out: &out, Now: steppingClock(1234567 * time.Nanosecond)})
			if err != nil {
				t.Fatal(err)
			}
			get(t, serve(t, l, tc.meta, tc.traceID, created)+"/items?id=7", tc.header)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("line\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// Go's HTTP client cannot send control bytes in a header, so the escaping
// of what other clients may send is checked on the renderer directly.
func TestJSONEscapesControlBytes(t *testing.T) {
	e := entry{start: t0, userAgent: "a\x00b\x7fc\rd"}
	line := appendJSON(nil, &e)
	if !bytes.Contains(line, []byte(`"user_agent":"a\u0000b\u007fc\rd"`)) {
		t.Fatalf("got %s", line)
	}
	line = appendApache(nil, &e)
	if !bytes.Contains(line, []byte(`"a\x00b\x7fc\x0dd"`)) {
		t.Fatalf("got %s", line)
	}
}

func TestUnknownFormat(t *testing.T) {
	if _, err := New(Options{Format: "common"}); err == nil || !strings.Contains(err.Error(), `"common"`) {
		t.Fatalf("got %v; want an error naming the format", err)
	}
}

func TestNilLoggerAddsNoLayer(t *testing.T) {
	var l *Logger
	h := http.HandlerFunc(created)
	if got := l.Layer(h); got == nil {
		t.Fatal("nil layer")
	}
}

// blockingWriter blocks every write until released, like a stderr nobody
// reads.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func TestSlowWriterDropsInsteadOfBlocking(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	l, err := New(Options{Format: Apache, Out: w, Queue: 4})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, l, meshed, "", created)
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		get(t, url+"/", nil)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("%d requests took %v with a stuck log writer", n, elapsed)
	}
	// A few lines are in the writer's buffer (it takes what it finds
	// queued before it flushes and blocks), Queue more waiting; the rest
	// are dropped.
	if d := l.Dropped(); d < n*3/4 {
		t.Errorf("dropped %d lines of %d; want all but the few buffered or queued", d, n)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	var out bytes.Buffer
	l, err := New(Options{Format: JSON, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, l, meshed, "", created)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, url+"/c", nil) }()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines; want 50", len(lines))
	}
	for _, line := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || v["uri"] != "/c" {
			t.Fatalf("line %q: %v", line, err)
		}
	}
}

func FuzzJSONLine(f *testing.F) {
	f.Add("GET", "/a?b=c", "curl/8", "spiffe://x/ns/a/sa/b")
	f.Add("P\"OST", "/\x00\n", "\xff\xfe", "\u2028")
	f.Fuzz(func(t *testing.T, method, uri, ua, id string) {
		e := entry{start: t0, method: method, uri: uri, userAgent: ua, clientID: id, status: 200}
		line := appendJSON(nil, &e)
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("%q is not JSON: %v", line, err)
		}
		for k, want := range map[string]string{"method": method, "uri": uri, "user_agent": ua, "client.id": id} {
			if got := v[k]; utf8.ValidString(want) && got != want {
				t.Fatalf("%s = %q; want %q", k, got, want)
			}
		}
		apache := appendApache(nil, &e)
		for _, c := range apache[:len(apache)-1] {
			if c < 0x20 || c >= 0x7f {
				t.Fatalf("apache line %q has a raw byte %#x", apache, c)
			}
		}
	})
}
