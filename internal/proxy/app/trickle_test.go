package app_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
)

// A response whose body trickles (the head, then a byte every 300 ms)
// reaches the client as the application writes it, through both proxies of
// a meshed pair (and so across the HTTP/2 mesh hop), to HTTP/1.1 and HTTP/2
// clients: the head at once, each byte well before the next — with a known
// length and without one (chunked).
func TestTricklingResponseFlowsAsWritten(t *testing.T) {
	t.Run("known length", func(t *testing.T) {
		testTrickle(t, "Content-Length: 3", func(b string) string { return b })
	})
	t.Run("chunked", func(t *testing.T) {
		testTrickle(t, "Transfer-Encoding: chunked", func(b string) string {
			if b == "c" {
				return "1\r\nc\r\n0\r\n\r\n"
			}
			return "1\r\n" + b + "\r\n"
		})
	})
}

// testTrickle serves the trickling response with the framing field given,
// each byte written as frame says.
func testTrickle(t *testing.T, framing string, frame func(string) string) {
	const step = 300 * time.Millisecond
	// When the application wrote the head, then each byte: per client, by
	// the path it asks for.
	wrote := map[string]chan time.Time{"/http1": make(chan time.Time, 8), "/h2c": make(chan time.Time, 8)}
	app := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != "GET" { // (not the proxy's h2c probe)
			return
		}
		wrote := wrote[req.URL.Path]
		if wrote == nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n"+framing+"\r\nContent-Type: text/plain\r\n\r\n")
		wrote <- time.Now()
		for _, b := range []string{"a", "b", "c"} {
			time.Sleep(step)
			io.WriteString(c, frame(b))
			wrote <- time.Now()
		}
	})
	ids := meshtest.StartIdentity(t, time.Hour)
	entry, _, _, _ := meshPair(t, ids, app)
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	for path, tr := range map[string]*http.Transport{"/http1": {}, "/h2c": {Protocols: &h2}} {
		wrote := wrote[path]
		t.Run(path[1:], func(t *testing.T) {
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + entry + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			// Each arrives within step/2 of the application writing it: a
			// proxy holding bytes back until the next write would be a
			// step late.
			if late := time.Since(<-wrote); late > step/2 {
				t.Errorf("the head arrived %v after the application wrote it", late)
			}
			one := make([]byte, 1)
			for i, want := range []string{"a", "b", "c"} {
				if _, err := io.ReadFull(resp.Body, one); err != nil || string(one) != want {
					t.Fatalf("byte %d: %q %v", i, one, err)
				}
				if late := time.Since(<-wrote); late > step/2 {
					t.Errorf("byte %d arrived %v after the application wrote it", i, late)
				}
			}
		})
	}
}
