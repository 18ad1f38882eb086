package run

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
)

// Restart policies, as a kubelet's: a replica whose application or proxy
// exits is stopped, then started again — always, only when it failed, or
// never.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Restart backoff: the wait before a restart doubles from restartMin to
// restartMax with every exit in a row, and starts over for a replica that
// ran restartReset without exiting.
const (
	restartMin   = time.Second
	restartMax   = time.Minute
	restartReset = time.Minute
)

// restarts reports whether a replica that exited with err starts again.
func (o *Options) restarts(err error) bool {
	return o.Restart == RestartAlways || o.Restart == RestartOnFailure && err != nil
}

// backoff is how long to wait before restarting in, and the count of
// exits in a row that makes.
func (in *instance) backoff() (time.Duration, int) {
	inARow := in.inARow + 1
	if !in.started.IsZero() && time.Since(in.started) >= restartReset {
		inARow = 1 // it ran a while: this exit is a new story
	}
	return min(restartMin<<min(inARow-1, 6), restartMax), inARow
}

// next is the replica that replaces in, which exited with err.
func (s *Set) next(in *instance, err error, inARow int) *instance {
	n := s.replica(in.index)
	n.restarts, n.lastExit, n.inARow = in.restarts+1, exitReason(err), inARow
	return n
}

// exitReason says how a process ended, as a label value: exit-N or the
// signal's name (signal-killed).
func exitReason(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit-0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "signal-" + strings.ReplaceAll(ws.Signal().String(), " ", "-")
		}
		return "exit-" + strconv.Itoa(ee.ExitCode())
	}
	return "failed-to-start"
}

// restartLabels say, on the workload, how often the replica restarted and
// why it last ended, for `trellis get workloads`.
func (in *instance) restartLabels() map[string]string {
	if in.restarts == 0 {
		return nil
	}
	return map[string]string{resources.RestartsLabel: strconv.Itoa(in.restarts), resources.LastExitLabel: in.lastExit}
}

// restart waits delay, then starts in (the replacement of a replica that
// exited) and has it watched; a start that fails is an exit too.
func (s *Set) restart(ctx context.Context, in *instance, delay time.Duration, exits chan<- exit) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	if err := in.start(ctx); err != nil {
		if ctx.Err() == nil {
			exits <- exit{in: in, what: "start", err: err}
		}
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		in.stop()
		return
	}
	s.instances[in.index] = in
	s.mu.Unlock()
	fmt.Fprintf(s.o.Err, "%s: restarted (restart %d; it last ended with %s)\n", in.name, in.restarts, in.lastExit)
	watch(ctx, in, exits)
}
