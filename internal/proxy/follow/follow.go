// Package follow keeps a proxy on a stream the control plane serves (its
// inbound policy, its egress networks): every message is applied as it
// comes; when the stream breaks, the last one stays in force and the
// stream is opened again, with a jittered backoff, until the proxy stops.
package follow

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Stream opens the stream with open and applies its messages until ctx
// ends. what names it in the logs.
func Stream[M any](ctx context.Context, log *slog.Logger, what string, open func(context.Context) (func() (M, error), error), apply func(M)) {
	failures := 0
	for ctx.Err() == nil {
		recv, err := open(ctx)
		for err == nil {
			var m M
			if m, err = recv(); err == nil {
				apply(m)
				failures = 0
			}
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		lvl := slog.LevelDebug
		if failures == 1 {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "watching the "+what+" failed; keeping the last one and retrying", "error", err)
		d := min(100*time.Millisecond<<min(failures, 6), 5*time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(d/2 + rand.N(d/2+1)):
		}
	}
}
