package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The web server's fixed content.
var (
	helloBody = []byte("hello from behind two proxies\n")
	// gzipBody is served with Content-Encoding: gzip and must arrive as is.
	gzipBody = mustGzip(bytes.Repeat([]byte("trellis compresses nothing itself. "), 200))
	// rangeBody is served with Range support.
	rangeBody = pattern(10000)
	// trailerBody is served with its sha256 in a trailer.
	trailerBody = pattern(70000)
)

func mustGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// pattern is n deterministic, non-repeating-looking bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	io.ReadFull(stream(uint64(n)), b)
	return b
}

// stream is size bytes of AES-CTR keystream: fast, deterministic, and
// without a period a proxy bug could hide in.
func stream(size uint64) io.Reader {
	block, _ := aes.NewCipher(make([]byte, 16))
	ctr := cipher.NewCTR(block, make([]byte, aes.BlockSize))
	return io.LimitReader(cipher.StreamReader{S: ctr, R: zeros{}}, int64(size))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// uploadResult is what /upload and PUT /bulk answer.
type uploadResult struct {
	Len    int64  `json:"len"`
	SHA256 string `json:"sha256"`
}

// webServer is the HTTP/1.1 + h2c (prior knowledge) backend.
type webServer struct {
	// sseAck lets /events send its second event: the client confirms it
	// received the first.
	sseAck chan struct{}
	// bulkSent carries the sha256 of each GET /bulk response body as sent.
	bulkSent chan string
}

// serveWeb serves the web backend on ln until the test ends.
func serveWeb(t *testing.T, ln net.Listener) *webServer {
	t.Helper()
	ws := &webServer{sseAck: make(chan struct{}), bulkSent: make(chan string, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", ws.hello)
	mux.HandleFunc("/status/{code}", ws.status)
	mux.HandleFunc("/gzip", ws.gzip)
	mux.HandleFunc("/range", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "range.bin", time.Unix(1700000000, 0), bytes.NewReader(rangeBody))
	})
	mux.HandleFunc("/upload", ws.upload)
	mux.HandleFunc("/trailers", ws.trailers)
	mux.HandleFunc("/events", ws.events)
	mux.HandleFunc("/ws", ws.websocket)
	mux.HandleFunc("PUT /bulk", ws.upload)
	mux.HandleFunc("GET /bulk", ws.bulkDownload)
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols), ReadHeaderTimeout: 10 * time.Second}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ws
}

func (ws *webServer) hello(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("X-Multi", "one")
	h.Add("X-Multi", "two")
	h.Add("Set-Cookie", "a=1; Path=/")
	h.Add("Set-Cookie", "b=2; Path=/")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(helloBody)))
	h.Set("X-Seen-Proto", r.Proto)
	w.Write(helloBody)
}

func (ws *webServer) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "bad code", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

func (ws *webServer) gzip(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(len(gzipBody)))
	h.Set("Vary", "Accept-Encoding")
	w.Write(gzipBody)
}

func (ws *webServer) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(uploadResult{Len: n, SHA256: hex.EncodeToString(h.Sum(nil))})
}

func (ws *webServer) trailers(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Trailer", "X-Body-Sha256, X-Trailer-Note")
	h.Set("Content-Type", "application/octet-stream")
	w.Write(trailerBody)
	sum := sha256.Sum256(trailerBody)
	h.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
	h.Set("X-Trailer-Note", "sent after the body")
}

// events writes one server-sent event, flushes, and writes the second only
// once the client confirmed the first: a proxy that buffers stalls it.
func (ws *webServer) events(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "event: tick\ndata: one\n\n")
	http.NewResponseController(w).Flush()
	select {
	case <-ws.sseAck:
	case <-r.Context().Done():
		return
	case <-time.After(20 * time.Second):
		return
	}
	io.WriteString(w, "event: tick\ndata: two\n\n")
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// websocket echoes every message with its type until the client closes.
func (ws *webServer) websocket(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	// Answer a close with the client's own code and reason.
	c.SetCloseHandler(func(code int, text string) error {
		return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	})
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

// bulkDownload streams ?size= bytes of keystream with a Content-Length and
// reports the sha256 of what it sent on bulkSent.
func (ws *webServer) bulkDownload(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseUint(r.URL.Query().Get("size"), 10, 64)
	if err != nil {
		http.Error(w, "size?", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatUint(size, 10))
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), stream(size))
	result := hex.EncodeToString(h.Sum(nil))
	if err != nil || uint64(n) != size {
		result = fmt.Sprintf("sent %d of %d bytes: %v", n, size, err)
	}
	select {
	case ws.bulkSent <- result:
	default:
	}
}

// echoServer echoes each connection's bytes and half-closes its side when
// the client half-closed.
type echoServer struct {
	// done carries, per connection, how many bytes were echoed and the
	// error that ended reading (nil: the client's EOF arrived).
	done chan echoResult
}

type echoResult struct {
	n   int64
	err error
}

func serveEcho(t *testing.T, ln net.Listener) *echoServer {
	t.Helper()
	es := &echoServer{done: make(chan echoResult, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, err := io.Copy(c, c)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				select {
				case es.done <- echoResult{n, err}:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return es
}

// jsonBody decodes an uploadResult.
func jsonBody(t *testing.T, b []byte) uploadResult {
	t.Helper()
	var r uploadResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("server answer %q is not an upload result: %v", truncate(b), err)
	}
	return r
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func equalFold(vs []string, want ...string) bool {
	if len(vs) != len(want) {
		return false
	}
	for i := range vs {
		if !strings.EqualFold(vs[i], want[i]) {
			return false
		}
	}
	return true
}
