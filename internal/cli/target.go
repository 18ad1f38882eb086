package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/kube/auth"
	"github.com/trellis-mesh/trellis/internal/kube/forward"
	"github.com/trellis-mesh/trellis/internal/kube/install"
)

// target is where the commands that read the mesh (stat, routes, edges,
// top, tap, get, diagnostics) find its API: the local control plane's
// socket, or — with --kubeconfig or --context — the read-only API of the
// cluster's destination service, through a port-forward that the API
// server authorizes (pods/portforward in namespace trellis).
type target struct {
	dataDir *string
	kube    *kubeFlags
}

// api connects to the target; done releases the connection.
func (t *target) api(ctx context.Context) (c *localapi.Client, done func(), err error) {
	if !t.kube.set() {
		return apiClient(*t.dataDir), func() {}, nil
	}
	cfg, err := auth.UserConfig(t.kube.kubeconfig, t.kube.context)
	if err != nil {
		return nil, nil, err
	}
	// A Pod can be Ready with nothing answering on the port for a moment
	// (its process restarting), or stop being ready as it restarts: the
	// forward is tried with a status call, and opened again — to another
	// ready Pod if there is one — for up to viewWait.
	deadline := time.Now().Add(viewWait)
	var failed []string // Pods that did not answer
	for {
		c, f, err := tryView(ctx, cfg, failed)
		if err == nil {
			return c, f.Close, nil
		}
		var answered *localapi.CallError
		if errors.As(err, &answered) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, nil, err
		}
		if f != nil {
			failed = append(failed, f.Pod)
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// viewWait bounds retrying a port-forward whose Pod does not answer yet.
const viewWait = 10 * time.Second

// tryView port-forwards to the read-only API of a ready destination Pod of
// the cluster's control plane, one not in avoid if it can, and checks that
// it answers; on an error the forward, if it was opened, is closed and
// returned for its Pod's name.
func tryView(ctx context.Context, cfg *rest.Config, avoid []string) (*localapi.Client, *forward.Forward, error) {
	f, err := forwardView(ctx, cfg, avoid...)
	if err != nil {
		return nil, nil, err
	}
	c := localapi.NewTCPClient(f.Addr, "port-forward to "+f.Pod)
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := c.Status(sctx); err != nil {
		f.Close()
		return nil, f, fmt.Errorf("the control plane's API through a port-forward to %s: %w", f.Pod, err)
	}
	return c, f, nil
}

// forwardView port-forwards to the read-only API of a ready destination
// Pod of the cluster's control plane, one not in avoid if it can.
func forwardView(ctx context.Context, cfg *rest.Config, avoid ...string) (*forward.Forward, error) {
	return forward.Start(ctx, cfg, install.Namespace, "app.kubernetes.io/name=destination,app.kubernetes.io/part-of=trellis", install.ViewPort, avoid...)
}
