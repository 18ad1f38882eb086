package outbound

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// attempt is one try of a request, possibly raced by a hedge.
type attempt struct {
	rt      *router
	svc     *discover.Service // the backend
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	body    *replay
	perTry  time.Duration
	modify  *route.HeaderModifier
	series  *metrics.Route // counts retries and timeouts; nil counts nothing
	decide  func(status, grpc int, h http.Header) bool
	racing  bool
	mu      sync.Mutex
	claimed *holdWriter // the racer whose response goes to the client
}

// run sends the attempt; with hedge > 0, a second racer (withdrawn from
// the budget) starts if the first has no response head by then, and the
// first head that claims the client wins while the other is cancelled. It
// reports whether the winning response is to be retried.
func (a *attempt) run(isRetry bool, hedge time.Duration, withdraw func() bool) bool {
	why := ""
	if isRetry {
		why = "retry"
	}
	if hedge <= 0 { // no race: serve on this goroutine
		hw, serve := a.prepare(why, !isRetry)
		serve()
		return hw.finish()
	}
	a.racing = true
	first := a.start(why, !isRetry)
	t := time.NewTimer(hedge)
	defer t.Stop()
	select {
	case <-first.done:
		return first.finish()
	case <-first.headed:
		<-first.done
		return first.finish()
	case <-t.C:
	}
	if !withdraw() {
		<-first.done
		return first.finish()
	}
	second := a.start("hedge", false)
	// The winner is the racer that claimed the client; a racer that ends
	// without claiming leaves the race to the other.
	var winner, loser *holdWriter
	firstDone, secondDone := first.done, second.done
	for winner == nil {
		select {
		case <-first.headed:
			winner, loser = first, second
		case <-second.headed:
			winner, loser = second, first
		case <-firstDone:
			firstDone = nil
		case <-secondDone:
			secondDone = nil
		}
		if winner == nil && firstDone == nil && secondDone == nil {
			winner, loser = first, second
			if a.owner() == second {
				winner, loser = second, first
			}
		}
	}
	loser.cancel()
	<-loser.done
	<-winner.done
	return winner.finish()
}

func (a *attempt) owner() *holdWriter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.claimed
}

// start runs one racer of the attempt on its own goroutine.
func (a *attempt) start(why string, first bool) *holdWriter {
	hw, serve := a.prepare(why, first)
	go serve()
	return hw
}

// prepare builds one racer: its writer, and the function that serves it.
// why is why it was sent ("" for a first try, "retry", "hedge"); first
// says it reads the client's own body.
func (a *attempt) prepare(why string, first bool) (*holdWriter, func()) {
	ctx := a.ctx
	if why != "" {
		ctx = explain.As(ctx, why)
		a.series.Retry()
	}
	var cancel context.CancelFunc
	if a.perTry > 0 {
		ctx, cancel = context.WithTimeout(ctx, a.perTry)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	hw := &holdWriter{a: a, why: why, header: http.Header{}, cancel: cancel, done: make(chan struct{}), headed: make(chan struct{})}
	req := a.r.WithContext(ctx)
	req.Body, req.ContentLength = a.body.next(first)
	if deadline, ok := ctx.Deadline(); ok && req.Header.Get("Grpc-Timeout") != "" {
		// Each attempt tells the server the time left to it.
		req.Header = req.Header.Clone()
		req.Header.Set("Grpc-Timeout", httpproxy.FormatGRPCTimeout(time.Until(deadline)))
	}
	return hw, func() {
		defer close(hw.done)
		defer cancel()
		// A racer's panic (a forwarder aborts a broken response with
		// http.ErrAbortHandler) must not kill the process from another
		// goroutine: it is kept, and the winner's raised on the handler's.
		// An abort of a response nobody wants (retried, or another racer's
		// won) is what cancelling it does: dropped.
		defer func() {
			if p := recover(); p != nil && !(p == http.ErrAbortHandler && (hw.retry || hw.lost)) {
				hw.panicked = p
			}
		}()
		a.rt.next.send(hw, req, a.svc)
		if !hw.written && !hw.hijacked && errors.Is(ctx.Err(), context.DeadlineExceeded) && a.r.Context().Err() == nil {
			// The forwarder gives up silently on a cancelled request (the
			// client left); here the route's timeout did it: answer 504,
			// which the policy may retry.
			a.series.Timeout()
			reason := "request timed out (route timeout)"
			if a.ctx.Err() == nil {
				reason = "backend request timed out (route timeout)"
			}
			httpproxy.WriteError(hw, req, http.StatusGatewayTimeout, reason)
		}
	}
}

// claim makes hw the racer whose response goes to the client, unless
// another already is.
func (a *attempt) claim(hw *holdWriter) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.claimed == nil {
		a.claimed = hw
	}
	return a.claimed == hw
}
