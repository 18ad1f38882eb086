package cli

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
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
	ctx, cancel := context.WithCancel(context.Background())
	cmd := New()
	out, w := io.Pipe()
	cmd.SetOut(w)
	cmd.SetArgs([]string{"web", "--web-addr", "127.0.0.1:0", "--api-url", api.URL})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out)
	// "dashboard on URL, reading API"
	url := strings.TrimSuffix(strings.Fields(line)[2], ",")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(u string) (int, string) {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(url); code != http.StatusOK || !strings.Contains(body, "/app.js") {
		t.Errorf("GET %s: %d %q", url, code, body)
	}
	base := strings.Split(url, "/?")[0]
	if code, body := get(base + "/v1/stat?kind=workload"); code != http.StatusOK || !strings.Contains(body, `"path":"/v1/stat"`) {
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
