package services

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// call sends one request to web and returns the status and the body.
func call(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, string(body)
}

// TestAppWithoutFailures runs the whole application — traffic against web,
// web against emoji and voting — and checks that every request succeeds
// and that the votes are counted.
func TestAppWithoutFailures(t *testing.T) {
	a := startApp(t, 0)
	traffic, out := runTraffic(t, TrafficConfig{WebURL: a.webURL, RPS: 50})
	rs := waitReports(t, out, 3)
	if err := traffic.stop(); err != nil {
		t.Fatalf("RunTraffic: %v", err)
	}
	sum := total(rs)
	if sum.requests == 0 || sum.ok != sum.requests {
		t.Errorf("with fail rate 0: %d of %d requests ok; want all of them, and some:\n%s",
			sum.ok, sum.requests, strings.Join(out.lines(), "\n"))
	}

	code, body := call(t, "GET", a.webURL+"/api/results")
	var results []webResult
	if err := json.Unmarshal([]byte(body), &results); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/results: %d %s (%v)", code, body, err)
	}
	var votes int64
	for _, r := range results {
		if r.Unicode == "" {
			t.Errorf("result %+v has no emoji", r)
		}
		votes += r.Votes
	}
	if votes == 0 {
		t.Errorf("no votes counted after %d requests: %s", sum.requests, body)
	}
}

// TestAppWhenVotingAlwaysFails checks that with fail rate 1 every vote
// fails with 502 while listing, which does not need voting, still works.
func TestAppWhenVotingAlwaysFails(t *testing.T) {
	a := startApp(t, 1)
	code, body := call(t, "GET", a.webURL+"/api/list")
	var list []webEmoji
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil || len(list) != len(catalogue) {
		t.Errorf("GET /api/list: %d %s (%v)", code, body, err)
	}
	code, body = call(t, "POST", a.webURL+"/api/vote?choice=:sunflower:")
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); code != http.StatusBadGateway || err != nil || !strings.Contains(e.Error, badMoment) {
		t.Errorf("POST /api/vote: %d %s; want 502 with {\"error\": %q}", code, body, badMoment)
	}
	if code, body := call(t, "POST", a.webURL+"/api/vote?choice=:unicorn:"); code != http.StatusNotFound {
		t.Errorf("POST /api/vote for an unknown emoji: %d %s; want 404", code, body)
	}

	_, out := runTraffic(t, TrafficConfig{WebURL: a.webURL, RPS: 50})
	sum := total(waitReports(t, out, 3))
	// Lists and votes alternate: the lists succeed, the votes fail.
	if sum.ok == 0 || sum.ok >= sum.requests || sum.ok < sum.requests/3 {
		t.Errorf("with fail rate 1: %d of %d requests ok; want about half:\n%s",
			sum.ok, sum.requests, strings.Join(out.lines(), "\n"))
	}
}

// TestRunStopsOnCancel checks that each program returns nil promptly once
// its context is cancelled, after it has served a request.
func TestRunStopsOnCancel(t *testing.T) {
	a := startApp(t, 0)
	if code, body := call(t, "POST", a.webURL+"/api/vote?choice=:rose:"); code != http.StatusOK {
		t.Fatalf("POST /api/vote: %d %s", code, body)
	}
	traffic, out := runTraffic(t, TrafficConfig{WebURL: a.webURL, RPS: 20})
	waitReports(t, out, 1)
	for _, p := range []struct {
		name string
		r    *running
	}{{"traffic", traffic}, {"web", a.web}, {"voting", a.voting}, {"emoji", a.emoji}} {
		began := time.Now()
		if err := p.r.stop(); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
		if d := time.Since(began); d > time.Second {
			t.Errorf("%s took %v to stop", p.name, d)
		}
	}
	for _, addr := range []string{a.emojiAddr, a.votingAddr, strings.TrimPrefix(a.webURL, "http://")} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after its program stopped", addr)
		}
	}
}

// TestRunStopsWhenCancelledBeforeServing checks the edge where the context
// ends before the server has even started.
func TestRunStopsWhenCancelledBeforeServing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := WebConfig{EmojiAddr: "127.0.0.1:1", VotingAddr: "127.0.0.1:2"}
	for name, run := range map[string]func() error{
		"emoji":  func() error { return RunEmoji(ctx, listen(t), nil) },
		"voting": func() error { return RunVoting(ctx, listen(t), 0.05, nil) },
		"web":    func() error { return RunWeb(ctx, listen(t), cfg, nil) },
		"traffic": func() error {
			return RunTraffic(ctx, TrafficConfig{WebURL: "http://127.0.0.1:1", RPS: 1, ReportEvery: time.Second})
		},
	} {
		if err := run(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
