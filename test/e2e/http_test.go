package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlProtocols are the two ways curl speaks HTTP to the proxy.
var curlProtocols = []struct {
	name, flag, proto string
}{
	{"http1.1", "--http1.1", "HTTP/1.1"},
	{"h2c", "--http2-prior-knowledge", "HTTP/2"},
}

// TestHTTP drives curl through both proxies: statuses, repeated header
// fields, HEAD, content encodings, ranges, uploads, 100-continue, trailers
// and server-sent events.
func TestHTTP(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		tp := newTopology(t, mode, webBackend)
		web := serveWeb(t, tp.ln[webBackend.name])
		through := tp.through(t, webBackend, "request_total")
		upload := pattern(300 << 10)
		uploadFile := filepath.Join(t.TempDir(), "upload.bin")
		if err := os.WriteFile(uploadFile, upload, 0o644); err != nil {
			t.Fatal(err)
		}

		for _, p := range curlProtocols {
			t.Run(p.name, func(t *testing.T) {
				t.Run("get", func(t *testing.T) {
					r := tp.curl(t, p.flag, tp.url(webBackend, "/hello"))
					h := r.final()
					if h.status != 200 || h.proto != p.proto {
						t.Fatalf("got %s %d, want %s 200", h.proto, h.status, p.proto)
					}
					if !bytes.Equal(r.body, helloBody) {
						t.Errorf("body %q, want %q", r.body, helloBody)
					}
					if got := h.header.Values("X-Multi"); !equalFold(got, "one", "two") {
						t.Errorf("X-Multi = %q, want [one two] in order", got)
					}
					if got := h.header.Values("Set-Cookie"); !equalFold(got, "a=1; Path=/", "b=2; Path=/") {
						t.Errorf("Set-Cookie = %q, want both cookies, in order", got)
					}
					if got := h.header.Get("X-Seen-Proto"); got == "" {
						t.Errorf("server header X-Seen-Proto missing")
					}
				})
				t.Run("status", func(t *testing.T) {
					r := tp.curl(t, p.flag, tp.url(webBackend, "/status/418"))
					if h := r.final(); h.status != 418 || string(r.body) != "status 418\n" {
						t.Errorf("got %d %q, want 418 %q", h.status, r.body, "status 418\n")
					}
					r = tp.curl(t, p.flag, tp.url(webBackend, "/status/503"))
					if h := r.final(); h.status != 503 || string(r.body) != "status 503\n" || h.header.Get("L5d-Proxy-Error") != "" {
						t.Errorf("got %d %q (l5d-proxy-error %q), want the server's own 503 %q", h.status, r.body, h.header.Get("L5d-Proxy-Error"), "status 503\n")
					}
				})
				t.Run("head", func(t *testing.T) {
					testHead(t, tp, p.flag)
				})
				t.Run("gzip", func(t *testing.T) {
					// No --compressed: curl keeps the bytes as they arrive.
					r := tp.curl(t, p.flag, "-H", "Accept-Encoding: gzip", tp.url(webBackend, "/gzip"))
					h := r.final()
					if h.status != 200 || h.header.Get("Content-Encoding") != "gzip" {
						t.Fatalf("got %d Content-Encoding %q, want 200 gzip", h.status, h.header.Get("Content-Encoding"))
					}
					if !bytes.Equal(r.body, gzipBody) {
						t.Errorf("gzip body changed on the way: %d bytes (sha256 %s), want %d bytes (sha256 %s)", len(r.body), sha(r.body), len(gzipBody), sha(gzipBody))
					}
				})
				t.Run("range", func(t *testing.T) {
					r := tp.curl(t, p.flag, "--range", "100-1099", tp.url(webBackend, "/range"))
					h := r.final()
					if h.status != 206 {
						t.Fatalf("got %d, want 206", h.status)
					}
					if got, want := h.header.Get("Content-Range"), "bytes 100-1099/10000"; got != want {
						t.Errorf("Content-Range = %q, want %q", got, want)
					}
					if !bytes.Equal(r.body, rangeBody[100:1100]) {
						t.Errorf("range body: %d bytes, not bytes 100-1099 of the content", len(r.body))
					}
				})
				t.Run("upload", func(t *testing.T) {
					args := []string{p.flag, "-H", "Expect:", "--data-binary", "@" + uploadFile, tp.url(webBackend, "/upload")}
					if p.name == "http1.1" {
						args = append([]string{"-H", "Transfer-Encoding: chunked"}, args...)
					}
					r := tp.curl(t, args...)
					if h := r.final(); h.status != 200 {
						t.Fatalf("got %d %q, want 200", h.status, truncate(r.body))
					}
					if got := jsonBody(t, r.body); got.Len != int64(len(upload)) || got.SHA256 != sha(upload) {
						t.Errorf("server received %d bytes sha256 %s, want %d bytes sha256 %s", got.Len, got.SHA256, len(upload), sha(upload))
					}
				})
				if p.name == "http1.1" {
					t.Run("expect-100-continue", func(t *testing.T) {
						start := time.Now()
						r := tp.curl(t, p.flag, "-H", "Expect: 100-continue", "--expect100-timeout", "10",
							"--data-binary", "@"+uploadFile, tp.url(webBackend, "/upload"))
						if len(r.heads) != 2 || r.heads[0].status != 100 || r.final().status != 200 {
							var got []int
							for _, h := range r.heads {
								got = append(got, h.status)
							}
							t.Fatalf("response statuses %v after %v, want [100 200]", got, time.Since(start).Round(time.Millisecond))
						}
						if got := jsonBody(t, r.body); got.Len != int64(len(upload)) || got.SHA256 != sha(upload) {
							t.Errorf("server received %d bytes sha256 %s, want %d bytes sha256 %s", got.Len, got.SHA256, len(upload), sha(upload))
						}
					})
				}
				t.Run("trailers", func(t *testing.T) {
					r := tp.curl(t, p.flag, tp.url(webBackend, "/trailers"))
					if h := r.final(); h.status != 200 || !bytes.Equal(r.body, trailerBody) {
						t.Fatalf("got %d with %d body bytes, want 200 with the %d-byte body", h.status, len(r.body), len(trailerBody))
					}
					if got := r.trailers.Get("X-Body-Sha256"); got != sha(trailerBody) {
						t.Errorf("trailer X-Body-Sha256 = %q, want %q (all trailers: %v)", got, sha(trailerBody), r.trailers)
					}
					if got := r.trailers.Get("X-Trailer-Note"); got != "sent after the body" {
						t.Errorf("trailer X-Trailer-Note = %q, want %q", got, "sent after the body")
					}
				})
				t.Run("server-sent-events", func(t *testing.T) {
					testSSE(t, tp, web, p.flag)
				})
			})
		}
		through()
	})
}

// testSSE reads /events with curl -N and confirms the first event to the
// server only once it arrived, so it fails if a proxy holds it back.
func testSSE(t *testing.T, tp *topology, web *webServer, protoFlag string) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := tp.curlCmd(ctx, protoFlag, "-N", tp.url(webBackend, "/events"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cancel()
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	await := func(want string) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("event stream ended before %q (curl: %s)", want, stderr.String())
				}
				if line == want {
					return
				}
			case <-timeout:
				t.Fatalf("%q not received within 5s of the server flushing it: a proxy buffers the event stream", want)
			}
		}
	}
	await("data: one")
	select {
	case web.sseAck <- struct{}{}:
	case <-time.After(5 * time.Second):
		t.Fatal("the server is not waiting for the first event's confirmation")
	}
	await("data: two")
	for line := range lines {
		if strings.TrimSpace(line) != "" {
			t.Errorf("unexpected line after the last event: %q", line)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("curl: %v %s", err, stderr.String())
	}
}

// testHead sends HEAD: the answer must carry the GET's fields and no body.
// Over HTTP/1.1 a GET follows on the same connection (curl --next reuses
// it), which would trip over body bytes after the HEAD answer; HTTP/2
// frames bodies, so there curl itself rejects DATA on a HEAD stream (and
// curl 7.88 cannot reuse a prior-knowledge connection with --next).
func testHead(t *testing.T, tp *topology, protoFlag string) {
	dir := t.TempDir()
	heads, body := filepath.Join(dir, "heads"), filepath.Join(dir, "body")
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	url := tp.url(webBackend, "/hello")
	// -I writes the HEAD response's fields to stdout.
	args := []string{protoFlag, "--head", url}
	followGET := protoFlag == "--http1.1"
	if followGET {
		args = append(args, "--next", "-sS", protoFlag, "-D", heads, "-o", body, url)
	}
	cmd := tp.curlCmd(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	head := parseHeads(t, string(out)).final()
	if head.status != 200 {
		t.Fatalf("HEAD: status %d, want 200", head.status)
	}
	if got := head.header.Get("Content-Length"); got != strconv.Itoa(len(helloBody)) {
		t.Errorf("HEAD: Content-Length = %q, want %d", got, len(helloBody))
	}
	if got := head.header.Values("X-Multi"); !equalFold(got, "one", "two") {
		t.Errorf("HEAD: X-Multi = %q, want [one two]", got)
	}
	if !followGET {
		return
	}
	h, err := os.ReadFile(heads)
	if err != nil {
		t.Fatal(err)
	}
	get := parseHeads(t, string(h)).final()
	b, _ := os.ReadFile(body)
	if get.status != 200 || !bytes.Equal(b, helloBody) {
		t.Errorf("GET after HEAD: %d %q, want 200 %q", get.status, b, helloBody)
	}
}
