package app_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// slowApp answers after 50 ms (or when the request is cancelled) and counts
// the requests that reached it.
func slowApp(t *testing.T, seen *atomic.Int64) string {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	})}
	return serve(t, srv)
}

// An HTTP/2 rapid-reset flood (HEADERS then RST_STREAM, stream after
// stream; or HEADERS then a frame the proxy must reset the stream for,
// "MadeYouReset") gets GOAWAY ENHANCE_YOUR_CALM after a bounded number of
// streams, is counted, and leaves no goroutine, file descriptor or CPU
// behind.
func TestRapidResetFloodGetsGoAway(t *testing.T) {
	for name, reset := range map[string]func(fr *http2.Framer, id uint32) error{
		"RST_STREAM": func(fr *http2.Framer, id uint32) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) },
		// A stream window beyond 2^31-1: the proxy resets the stream.
		"WINDOW_UPDATE overflow": func(fr *http2.Framer, id uint32) error { return fr.WriteWindowUpdate(id, 1<<31-1) },
	} {
		t.Run(name, func(t *testing.T) { rapidResetFlood(t, reset) })
	}
}

func rapidResetFlood(t *testing.T, reset func(fr *http2.Framer, id uint32) error) {
	var seen atomic.Int64
	p := rawProxy(t, slowApp(t, &seen))
	goroutines, fds := settledGoroutines(), testkit.OpenFDs(t)
	cpu := cpuTime(t)

	c, err := net.Dial("tcp", p.InboundAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	type goAway struct {
		code http2.ErrCode
		last uint32
	}
	got := make(chan goAway, 1)
	go func() {
		defer close(got)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				got <- goAway{g.ErrCode, g.LastStreamID}
				return
			}
		}
	}()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "app"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const attempts = 200_000
	sent := 0
	for id := uint32(1); sent < attempts; id += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}) != nil ||
			reset(fr, id) != nil {
			break
		}
		sent++
	}
	g, ok := <-got
	if !ok {
		t.Fatalf("the proxy closed the flood (%d streams sent) without GOAWAY", sent)
	}
	if g.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", g.code)
	}
	if sent == attempts {
		t.Fatalf("the proxy took all %d reset streams", attempts)
	}
	t.Logf("GOAWAY %v (last stream %d) after %d streams sent; %d reached the application", g.code, g.last, sent, seen.Load())
	if n := seen.Load(); n > 5000 {
		t.Errorf("%d flood requests reached the application", n)
	}
	if n := scrape(t, p.AdminAddr.String()).Sum("inbound_http2_reset_floods_total", nil); n != 1 {
		t.Errorf("inbound_http2_reset_floods_total = %v, want 1", n)
	}
	c.Close()
	waitGoroutines(t, goroutines)
	testkit.WaitOpenFDs(t, fds+5, 5*time.Second)
	idle := cpuTime(t)
	time.Sleep(500 * time.Millisecond)
	if used := cpuTime(t) - idle; used > 150*time.Millisecond {
		t.Errorf("the proxy used %v of CPU in the 500 ms after the flood (%v during it)", used, idle-cpu)
	}
}

// A client that cancels many requests — a third of them, before their
// response — is not a flood: its connection stays open and the rest of its
// requests are answered.
func TestCancellingClientIsNotAFlood(t *testing.T) {
	var seen atomic.Int64
	p := rawProxy(t, slowApp(t, &seen))
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &h2}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 20)
	for i := range 600 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if i%3 == 0 {
				time.AfterFunc(5*time.Millisecond, cancel)
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.InboundAddr.String()+"/", nil)
			resp, err := c.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil && i%3 != 0 && !errors.Is(err, context.Canceled) {
				failed.Add(1)
				t.Logf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests that were not cancelled failed", n)
	}
	if n := scrape(t, p.AdminAddr.String()).Sum("inbound_http2_reset_floods_total", nil); n != 0 {
		t.Errorf("inbound_http2_reset_floods_total = %v for a client that cancels a third of its requests", n)
	}
}
