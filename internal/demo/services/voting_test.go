package services

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

// fakeSleep records the delays it is asked for instead of sleeping.
type fakeSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (f *fakeSleep) sleep(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delays = append(f.delays, d)
	return nil
}

func TestVotingDelayIsWithinBounds(t *testing.T) {
	// The extremes of the random source, then a real one. The first three
	// calls are Results, which draw only the delay; a Vote also draws
	// whether it fails.
	fixed := []float64{0, 0.5, 0.999999999}
	random := func() float64 {
		if len(fixed) > 0 {
			r := fixed[0]
			fixed = fixed[1:]
			return r
		}
		return rand.Float64()
	}
	fake := &fakeSleep{}
	s := newVotingServer(0, random, fake.sleep)
	ctx := context.Background()
	const calls = 500
	for i := range calls {
		var err error
		if i >= 3 && i%2 == 0 {
			_, err = s.Vote(ctx, &demov1.VoteRequest{Shortcode: ":cactus:"})
		} else {
			_, err = s.Results(ctx, &demov1.ResultsRequest{})
		}
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if len(fake.delays) != calls {
		t.Fatalf("%d calls slept %d times; want once each", calls, len(fake.delays))
	}
	lo, hi := fake.delays[0], fake.delays[0]
	for i, d := range fake.delays {
		if d < minVotingDelay || d > maxVotingDelay {
			t.Errorf("call %d slept %v; want %v to %v", i, d, minVotingDelay, maxVotingDelay)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if fake.delays[0] != 5*time.Millisecond || fake.delays[1] != 15*time.Millisecond || fake.delays[2] < 24*time.Millisecond {
		t.Errorf("delays for 0, 0.5, ~1: %v; want 5ms, 15ms, ~25ms", fake.delays[:3])
	}
	if hi-lo < 15*time.Millisecond {
		t.Errorf("delays span only %v to %v; want them spread over 5–25ms", lo, hi)
	}
}

func TestVotingFailRate(t *testing.T) {
	for _, tc := range []struct {
		failRate   float64
		wantFailed int
	}{{0, 0}, {1, 100}} {
		s := newVotingServer(tc.failRate, rand.Float64, (&fakeSleep{}).sleep)
		failed := 0
		for range 100 {
			_, err := s.Vote(context.Background(), &demov1.VoteRequest{Shortcode: ":rose:"})
			if err != nil {
				if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != badMoment {
					t.Fatalf("fail rate %v: Vote: %v; want UNAVAILABLE %q", tc.failRate, err, badMoment)
				}
				failed++
			}
		}
		if failed != tc.wantFailed {
			t.Errorf("fail rate %v: %d of 100 votes failed; want %d", tc.failRate, failed, tc.wantFailed)
		}
	}
}

func TestVotingFailsAShareOfVotes(t *testing.T) {
	// Each vote draws twice: its delay, then whether it fails. The failure
	// draws alternate 0.2 and 0.8, so with fail rate 0.5 every other vote
	// fails.
	var draws []float64
	for range 10 {
		draws = append(draws, 0.5, 0.2, 0.5, 0.8)
	}
	random := func() float64 {
		r := draws[0]
		draws = draws[1:]
		return r
	}
	s := newVotingServer(0.5, random, (&fakeSleep{}).sleep)
	failed := 0
	for range 20 {
		if _, err := s.Vote(context.Background(), &demov1.VoteRequest{Shortcode: ":rose:"}); err != nil {
			failed++
		}
	}
	if failed != 10 {
		t.Errorf("%d of 20 votes failed; want 10", failed)
	}
}

func TestVotingResults(t *testing.T) {
	s := newVotingServer(0, rand.Float64, (&fakeSleep{}).sleep)
	for _, code := range []string{":b:", ":a:", ":c:", ":c:", ":b:", ":c:"} {
		if _, err := s.Vote(context.Background(), &demov1.VoteRequest{Shortcode: code}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Vote(context.Background(), &demov1.VoteRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Vote without shortcode: %v; want INVALID_ARGUMENT", err)
	}
	resp, err := s.Results(context.Background(), &demov1.ResultsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResults() {
		got = append(got, fmt.Sprintf("%s=%d", r.GetShortcode(), r.GetVotes()))
	}
	if want := "[:c:=3 :b:=2 :a:=1]"; fmt.Sprint(got) != want {
		t.Errorf("Results = %v; want %s", got, want)
	}
}

func TestVotingDelayEndsWithTheCall(t *testing.T) {
	s := newVotingServer(0, rand.Float64, sleepCtx)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Vote(ctx, &demov1.VoteRequest{Shortcode: ":rose:"})
	if status.Code(err) != codes.Canceled {
		t.Errorf("Vote with a cancelled context: %v; want CANCELED", err)
	}
}

func TestRunVotingRejectsBadFailRate(t *testing.T) {
	for _, rate := range []float64{-0.1, 1.5} {
		if err := RunVoting(context.Background(), listen(t), rate, nil); err == nil {
			t.Errorf("RunVoting with fail rate %v: no error", rate)
		}
	}
}

// TestVotingStopsGracefully checks that cancelling RunVoting's context lets
// a call in flight finish before RunVoting returns nil.
func TestVotingStopsGracefully(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	block := func(ctx context.Context, _ time.Duration) error {
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	lis := listen(t)
	vs := newVotingServer(0, rand.Float64, block)
	srv := start(t, "voting", func(ctx context.Context) error { return runVoting(ctx, lis, vs, testLog(t)) })
	conn, err := dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	voted := make(chan error, 1)
	go func() {
		_, err := demov1.NewVotingClient(conn).Vote(context.Background(), &demov1.VoteRequest{Shortcode: ":rose:"})
		voted <- err
	}()
	<-entered
	srv.cancel()
	select {
	case err := <-srv.done:
		t.Fatalf("RunVoting returned %v with a call in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-voted; err != nil {
		t.Errorf("vote in flight during the stop: %v", err)
	}
	if err := srv.stop(); err != nil {
		t.Errorf("RunVoting: %v", err)
	}
}
