package localapi

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a control plane that Launch started.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // its exit, once done is closed
}

// Done is closed when the process has exited; Err then says how.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit (nil for a clean one), once Done is closed.
func (p *Process) Err() error { return p.err }

// Stop asks the control plane to stop (SIGTERM: it removes what it set up,
// its network included) and waits for it, killing it after 30 s.
func (p *Process) Stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return errors.New("the control plane did not stop within 30s")
	}
}

// Launch starts cmd, a control plane serving the data directory dataDir
// (trellis-control up), and waits until it answers on the directory's
// socket, returning its status. If the process exits first, does not
// answer within timeout or ctx ends, it is stopped and the error says so;
// where names its output for the error ("see ...").
func Launch(ctx context.Context, cmd *exec.Cmd, dataDir string, timeout time.Duration, where string) (Status, *Process, error) {
	if err := cmd.Start(); err != nil {
		return Status{}, nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	fail := func(err error) (Status, *Process, error) {
		p.Stop()
		return Status{}, nil, err
	}
	api := NewClient(filepath.Join(dataDir, SocketName))
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fail(fmt.Errorf("the control plane exited (%v); see %s", p.err, where))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if st, err := api.Status(ctx); err == nil && st.PID == cmd.Process.Pid {
			return st, p, nil
		}
	}
	return fail(fmt.Errorf("the control plane did not answer within %v; see %s", timeout, where))
}
