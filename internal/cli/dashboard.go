package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/web"
	"github.com/trellis-mesh/trellis/internal/kube/auth"
	"github.com/trellis-mesh/trellis/internal/kube/forward"
)

func dashboardCmd(t *target) *cobra.Command {
	var addr string
	var open bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Show the dashboard: the mesh's topology, golden metrics, routes and live requests in a browser",
		Long: `dashboard prints the URL of the dashboard (with --open, opens it in a
browser). In local mode the control plane serves it ('trellis up
--web-addr', 127.0.0.1:50750 by default). In Kubernetes (--kubeconfig or
--context) this command serves it on --address, reading the cluster's
read-only API through a port-forward, until Ctrl-C.

The dashboard is read-only. Its URL carries a token, which the page trades
for a cookie; its API answers no request without it. It answers only
requests addressed to localhost, 127.0.0.1, ::1 or the address it listens
on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !t.kube.set() {
				st, err := apiClient(*t.dataDir).Status(cmd.Context())
				if err != nil {
					return err
				}
				if st.DashboardURL == "" {
					return errors.New("the control plane serves no dashboard: start it with 'trellis up --web-addr 127.0.0.1:50750'")
				}
				return show(cmd, st.DashboardURL, open)
			}
			cfg, err := auth.UserConfig(t.kube.kubeconfig, t.kube.context)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fw := &forwarder{start: func() (*forward.Forward, error) {
				return forwardView(ctx, cfg)
			}}
			f, err := fw.get()
			if err != nil {
				return err
			}
			defer fw.close()
			w, err := web.Start(web.Options{Addr: addr, AnyPort: !cmd.Flags().Changed("address")}, fw.proxy())
			if err != nil {
				return fmt.Errorf("--address: %w", err)
			}
			if err := show(cmd, w.URL(), open); err != nil {
				w.Close()
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "serving the dashboard through a port-forward to %s; Ctrl-C stops it\n", f.Pod)
			return w.Serve(ctx)
		},
	}
	cmd.Flags().StringVar(&addr, "address", "127.0.0.1:50750", "Kubernetes: where to serve the dashboard (loopback)")
	cmd.Flags().BoolVar(&open, "open", false, "open the dashboard in the desktop's browser (xdg-open)")
	return cmd
}

// forwarder keeps a port-forward to the cluster's read-only API, starting
// a new one (to whichever destination Pod is ready) when a request through
// the current one fails: the Pod it reached was replaced, by an upgrade or
// a rollout.
type forwarder struct {
	start func() (*forward.Forward, error)

	mu      sync.Mutex
	current *forward.Forward
}

func (fw *forwarder) get() (*forward.Forward, error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.current == nil {
		f, err := fw.start()
		if err != nil {
			return nil, err
		}
		fw.current = f
	}
	return fw.current, nil
}

// drop forgets f (if it is still the current one), for the next request to
// start another.
func (fw *forwarder) drop(f *forward.Forward) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.current == f {
		f.Close()
		fw.current = nil
	}
}

func (fw *forwarder) close() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.current != nil {
		fw.current.Close()
	}
}

// proxy relays the dashboard's API calls through the current forward.
func (fw *forwarder) proxy() http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			if f, err := fw.get(); err == nil {
				r.Out.URL.Scheme, r.Out.URL.Host = "http", f.Addr
				r.Out = r.Out.WithContext(context.WithValue(r.Out.Context(), forwardKey{}, f))
			} else {
				r.Out = r.Out.WithContext(context.WithValue(r.Out.Context(), forwardErr{}, err))
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the browser went away, not the forward
			}
			if ferr, ok := r.Context().Value(forwardErr{}).(error); ok {
				err = ferr
			} else if f, ok := r.Context().Value(forwardKey{}).(*forward.Forward); ok {
				fw.drop(f)
				err = fmt.Errorf("the port-forward to %s failed (the next request starts another): %w", f.Pod, err)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		},
	}
}

type (
	forwardKey struct{}
	forwardErr struct{}
)

// show prints url, and opens it when asked.
func show(cmd *cobra.Command, u string, open bool) error {
	fmt.Fprintln(cmd.OutOrStdout(), u)
	if !open {
		return nil
	}
	c := exec.Command("xdg-open", u)
	if err := c.Start(); err != nil {
		return fmt.Errorf("opening %s: %w (open it yourself)", u, err)
	}
	go c.Wait()
	return nil
}
