package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

const (
	bulkSize = 100 << 20
	// maxRSSGrowthKB is how much a proxy's resident memory may rise while it
	// streams a bulk transfer.
	maxRSSGrowthKB = 8 << 10
)

// TestBulk moves 100 MiB each way over HTTP/1.1 through both proxies: the
// bytes must arrive intact and the proxies must stream them, not buffer.
func TestBulk(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		tp := newTopology(t, mode, webBackend)
		web := serveWeb(t, tp.ln[webBackend.name])
		through := tp.through(t, webBackend, "request_total")
		client := tp.httpClient()
		defer client.CloseIdleConnections()
		url := tp.url(webBackend, "/bulk")

		// Warm up: the first request creates the pools, series and buffers
		// every later request reuses.
		resp, err := client.Get(url + "?size=65536")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		<-web.bulkSent

		t.Run("upload", func(t *testing.T) {
			watches := watchProxies(t, tp)
			want := sha256.New()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, io.TeeReader(stream(bulkSize), want))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = bulkSize
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("PUT: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT: %s %q %v", resp.Status, truncate(body), err)
			}
			t.Logf("100 MiB upload took %v", time.Since(start).Round(time.Millisecond))
			got := jsonBody(t, body)
			if wantSum := hex.EncodeToString(want.Sum(nil)); got.Len != bulkSize || got.SHA256 != wantSum {
				t.Errorf("server received %d bytes sha256 %s; client sent %d bytes sha256 %s", got.Len, got.SHA256, bulkSize, wantSum)
			}
			checkGrowth(t, watches)
		})

		t.Run("download", func(t *testing.T) {
			watches := watchProxies(t, tp)
			start := time.Now()
			resp, err := client.Get(url + "?size=" + strconv.Itoa(bulkSize))
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != bulkSize {
				t.Fatalf("GET: %s Content-Length %d, want 200 and %d", resp.Status, resp.ContentLength, bulkSize)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil {
				t.Fatalf("GET body after %d bytes: %v", n, err)
			}
			t.Logf("100 MiB download took %v", time.Since(start).Round(time.Millisecond))
			var sent string
			select {
			case sent = <-web.bulkSent:
			case <-time.After(10 * time.Second):
				t.Fatal("server did not finish sending")
			}
			if got := hex.EncodeToString(h.Sum(nil)); n != bulkSize || got != sent {
				t.Errorf("client received %d bytes sha256 %s; server sent %d bytes: %s", n, got, bulkSize, sent)
			}
			checkGrowth(t, watches)
		})
		through()
	})
}

type namedWatch struct {
	name string
	w    *memWatch
}

func watchProxies(t *testing.T, tp *topology) []namedWatch {
	t.Helper()
	return []namedWatch{{"A", watchMemory(t, tp.a)}, {"B", watchMemory(t, tp.b[webBackend.name])}}
}

// checkGrowth fails the test if a proxy's resident memory rose more than
// maxRSSGrowthKB during the transfer.
func checkGrowth(t *testing.T, watches []namedWatch) {
	t.Helper()
	for _, nw := range watches {
		growth, how := nw.w.growthKB(t)
		t.Logf("proxy %s: RSS grew %d kB (%s)", nw.name, growth, how)
		if growth > maxRSSGrowthKB {
			t.Errorf("proxy %s: resident memory grew %d kB during a 100 MiB transfer, more than %d kB (%s): it buffers instead of streaming", nw.name, growth, maxRSSGrowthKB, how)
		}
	}
}
