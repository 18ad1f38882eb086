package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestWebServesTheDashboardInFrontOfAnAPI(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"rows":[],"path":"`+r.URL.Path+`"}`)
	}))
	defer api.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cmd := New()
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{"web", "--web-addr", addr, "--api-url", api.URL})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	get := func(path string) (int, string) {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, "/app.js") {
		t.Errorf("GET /: %d %q", code, body)
	}
	if code, body := get("/v1/stat?kind=workload"); code != http.StatusOK || !strings.Contains(body, `"path":"/v1/stat"`) {
		t.Errorf("GET /v1/stat: %d %q, want the API's answer", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("web: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("web did not stop when its context ended")
	}

	for _, args := range [][]string{{"web", "--api-url", "trellis-destination:8085"}, {"web", "--api-url", api.URL, "--web-addr", "0.0.0.0:0"}} {
		cmd := New()
		cmd.SetOut(io.Discard)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
