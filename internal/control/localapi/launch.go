package localapi

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Launch starts cmd, a control plane serving the data directory dataDir
// (trellis-control up), and waits until it answers on the directory's
// socket. It returns the control plane's status and a channel that gets
// the process's exit. If the process exits first, does not answer within
// timeout or ctx ends, it is stopped (SIGTERM, SIGKILL 30 s later) and the
// error says so; where names its output for the error ("see ...").
func Launch(ctx context.Context, cmd *exec.Cmd, dataDir string, timeout time.Duration, where string) (Status, <-chan error, error) {
	if err := cmd.Start(); err != nil {
		return Status{}, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) (Status, <-chan error, error) {
		// SIGTERM first: a control plane half way through creating its
		// network removes it as it stops.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return Status{}, nil, err
	}
	api := NewClient(filepath.Join(dataDir, SocketName))
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fail(fmt.Errorf("the control plane exited (%v); see %s", err, where))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if st, err := api.Status(ctx); err == nil && st.PID == cmd.Process.Pid {
			return st, exited, nil
		}
	}
	return fail(fmt.Errorf("the control plane did not answer within %v; see %s", timeout, where))
}
