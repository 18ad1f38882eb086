package services

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// listen opens a loopback listener on a free port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// testLog logs to the test's output.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a program started in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs fn with a context of its own in the background; the test's
// cleanup stops it and checks that it returned nil promptly.
func start(t *testing.T, name string, fn func(ctx context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- fn(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	return r
}

// stop cancels the program and waits, at most 3 s, for it to return; it
// returns the program's error. It may be called more than once.
func (r *running) stop() error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(3 * time.Second):
		return errTimeout
	}
}

var errTimeout = errors.New("did not return within 3s of being cancelled")

// app is the three servers of the application on loopback.
type app struct {
	emojiAddr, votingAddr, webURL string
	emoji, voting, web            *running
}

// startApp runs emoji, voting (with failRate) and web in this process.
func startApp(t *testing.T, failRate float64) *app {
	t.Helper()
	log := testLog(t)
	el, vl, wl := listen(t), listen(t), listen(t)
	a := &app{
		emojiAddr:  el.Addr().String(),
		votingAddr: vl.Addr().String(),
		webURL:     "http://" + wl.Addr().String(),
	}
	cfg := WebConfig{EmojiAddr: a.emojiAddr, VotingAddr: a.votingAddr}
	a.emoji = start(t, "emoji", func(ctx context.Context) error { return RunEmoji(ctx, el, log.With("app", "emoji")) })
	a.voting = start(t, "voting", func(ctx context.Context) error { return RunVoting(ctx, vl, failRate, log.With("app", "voting")) })
	a.web = start(t, "web", func(ctx context.Context) error { return RunWeb(ctx, wl, cfg, log.With("app", "web")) })
	return a
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the complete lines written so far.
func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	text := s.b.String()
	end := strings.LastIndexByte(text, '\n')
	if end < 0 {
		return nil
	}
	return strings.Split(text[:end], "\n")
}

// eventually polls cond every 10 ms for up to d and reports whether it
// became true.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// checkNoLeaks fails the test if, within 3 s, the number of goroutines does
// not come back down to at most before.
func checkNoLeaks(t *testing.T, before int) {
	t.Helper()
	if !eventually(3*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}
