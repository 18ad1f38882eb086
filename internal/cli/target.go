package cli

import (
	"context"
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
	// (its process restarting): the forward is tried with a status call,
	// and opened again, to any ready Pod, for up to viewWait.
	deadline := time.Now().Add(viewWait)
	for {
		f, err := forwardView(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		c := localapi.NewTCPClient(f.Addr, "port-forward to "+f.Pod)
		_, err = c.Status(ctx)
		if err == nil {
			return c, f.Close, nil
		}
		f.Close()
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("the control plane's API through a port-forward to %s: %w", f.Pod, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// viewWait bounds retrying a port-forward whose Pod does not answer yet.
const viewWait = 10 * time.Second

// forwardView port-forwards to the read-only API of a ready destination
// Pod of the cluster's control plane.
func forwardView(ctx context.Context, cfg *rest.Config) (*forward.Forward, error) {
	return forward.Start(ctx, cfg, install.Namespace, "app.kubernetes.io/name=destination,app.kubernetes.io/part-of=trellis", install.ViewPort)
}
