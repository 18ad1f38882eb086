package services

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
)

// Every voting call takes between minVotingDelay and maxVotingDelay extra,
// chosen uniformly at random: voting is the demo's slow back end.
const (
	minVotingDelay = 5 * time.Millisecond
	maxVotingDelay = 25 * time.Millisecond
)

// badMoment is the message of the Vote calls that fail on purpose.
const badMoment = "voting had a bad moment"

// chance is a source of random numbers in [0, 1), like rand.Float64.
type chance func() float64

// sleeper waits for d or until ctx ends, whichever is first, and returns
// ctx's error in the second case.
type sleeper func(ctx context.Context, d time.Duration) error

// sleepCtx is the real sleeper.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// votingServer implements trellis.demo.v1.Voting in memory.
type votingServer struct {
	demov1.UnimplementedVotingServer
	failRate float64
	random   chance  // decides delays and failures
	sleep    sleeper // applies the delays

	mu    sync.Mutex
	votes map[string]int64
}

func newVotingServer(failRate float64, random chance, sleep sleeper) *votingServer {
	return &votingServer{failRate: failRate, random: random, sleep: sleep, votes: map[string]int64{}}
}

// delay is how much longer the next call takes: uniform in
// [minVotingDelay, maxVotingDelay].
func (s *votingServer) delay() time.Duration {
	r := min(max(s.random(), 0), 1)
	return minVotingDelay + time.Duration(r*float64(maxVotingDelay-minVotingDelay))
}

// slowDown sleeps for one call's delay; it fails only if ctx ends first.
func (s *votingServer) slowDown(ctx context.Context) error {
	if err := s.sleep(ctx, s.delay()); err != nil {
		return status.FromContextError(err).Err()
	}
	return nil
}

// Vote counts one vote; a share failRate of calls fail with UNAVAILABLE.
func (s *votingServer) Vote(ctx context.Context, req *demov1.VoteRequest) (*demov1.VoteResponse, error) {
	if err := s.slowDown(ctx); err != nil {
		return nil, err
	}
	code := req.GetShortcode()
	if code == "" {
		return nil, status.Error(codes.InvalidArgument, "shortcode is empty")
	}
	if s.random() < s.failRate {
		return nil, status.Error(codes.Unavailable, badMoment)
	}
	s.mu.Lock()
	s.votes[code]++
	s.mu.Unlock()
	return &demov1.VoteResponse{}, nil
}

// Results returns every count, most votes first, ties by shortcode.
func (s *votingServer) Results(ctx context.Context, _ *demov1.ResultsRequest) (*demov1.ResultsResponse, error) {
	if err := s.slowDown(ctx); err != nil {
		return nil, err
	}
	return &demov1.ResultsResponse{Results: s.snapshot()}, nil
}

// snapshot copies the counts out, sorted as Results promises.
func (s *votingServer) snapshot() []*demov1.Result {
	s.mu.Lock()
	out := make([]*demov1.Result, 0, len(s.votes))
	for code, n := range s.votes {
		out = append(out, &demov1.Result{Shortcode: code, Votes: n})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *demov1.Result) int {
		return cmp.Or(cmp.Compare(b.GetVotes(), a.GetVotes()), cmp.Compare(a.GetShortcode(), b.GetShortcode()))
	})
	return out
}

// checkFailRate reports whether rate is a probability.
func checkFailRate(rate float64) error {
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		return fmt.Errorf("%v is not between 0 and 1", rate)
	}
	return nil
}

// RunVoting serves the Voting gRPC service on lis until ctx is cancelled,
// then stops gracefully and returns nil. failRate, in [0, 1], is the share of
// Vote calls that fail with UNAVAILABLE. It closes lis. A nil log discards
// logs.
func RunVoting(ctx context.Context, lis net.Listener, failRate float64, log *slog.Logger) error {
	return runVoting(ctx, lis, newVotingServer(failRate, rand.Float64, sleepCtx), log)
}

// runVoting is RunVoting with the server, and so its randomness and its
// clock, supplied by the caller.
func runVoting(ctx context.Context, lis net.Listener, vs *votingServer, log *slog.Logger) error {
	if err := checkFailRate(vs.failRate); err != nil {
		_ = lis.Close()
		return fmt.Errorf("fail rate: %w", err)
	}
	srv := grpc.NewServer()
	demov1.RegisterVotingServer(srv, vs)
	orDiscard(log).Info("voting listening", "addr", lis.Addr().String(), "fail_rate", vs.failRate)
	return serveGRPC(ctx, lis, srv)
}
