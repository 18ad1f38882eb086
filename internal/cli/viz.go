package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
)

// vizFlags are the flags the observability commands share.
type vizFlags struct {
	namespace string
	all       bool
	from, to  string
	window    time.Duration
	output    string
}

func (f *vizFlags) bind(cmd *cobra.Command, fromTo bool) {
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "default", "namespace of the resources")
	cmd.Flags().BoolVarP(&f.all, "all-namespaces", "A", false, "resources in every namespace")
	cmd.Flags().DurationVarP(&f.window, "time-window", "t", metricsapi.DefaultWindow, "window the metrics are computed over, e.g. 10s, 1m, 1h")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "table, wide or json")
	if fromTo {
		cmd.Flags().StringVar(&f.from, "from", "", "only traffic from this resource, KIND/NAME (e.g. workload/web, svc/web)")
		cmd.Flags().StringVar(&f.to, "to", "", "only traffic to this resource, KIND/NAME")
	}
}

// query renders the flags as the metrics API's query parameters.
func (f *vizFlags) query() (url.Values, error) {
	switch f.output {
	case "table", "wide", "json":
	default:
		return nil, fmt.Errorf("-o %q: must be table, wide or json", f.output)
	}
	if f.from != "" && f.to != "" {
		return nil, fmt.Errorf("--from and --to cannot be used together")
	}
	for name, v := range map[string]string{"--from": f.from, "--to": f.to} {
		if v != "" {
			if _, err := metricsapi.ParseRef(v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if f.window < time.Second {
		return nil, fmt.Errorf("--time-window %v: must be at least 1s", f.window)
	}
	q := url.Values{"window": {f.window.String()}}
	if !f.all {
		q.Set("namespace", f.namespace)
	}
	if f.from != "" {
		q.Set("from", f.from)
	}
	if f.to != "" {
		q.Set("to", f.to)
	}
	return q, nil
}

func statCmd(t *target) *cobra.Command {
	var f vizFlags
	cmd := &cobra.Command{
		Use:   "stat [KIND] [NAME]",
		Short: "Show the golden metrics of services, workloads or namespaces",
		Long: `stat shows, per resource, its meshed instances, success rate, requests per
second, latency percentiles (time to the response head) and open TCP
connections, over --time-window, from the metrics API. KIND is workload
(wl, deploy; the default), service (svc), namespace (ns) or server (srv);
NAME, or KIND/NAME, selects one. -o wide adds UNAUTHORIZED: the calls
the resource's proxies denied by authorization policy, per second.

Servers (policy.trellis.dev) show the instances they select, the
requests and connections their authorization policies allowed (RPS) and
those they denied (UNAUTHORIZED), per second.

Without --from or --to the numbers are what the resource's own proxies
received (inbound). --from X shows what X's proxies sent to the
resources; --to Y what the resources' proxies sent to Y.`,
		Example: `  trellis stat
  trellis stat svc web
  trellis stat workload/web --from workload/traffic
  trellis stat ns -A -o json
  trellis stat srv`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query()
			if err != nil {
				return err
			}
			kind, name, err := kindAndName(args)
			if err != nil {
				return err
			}
			q.Set("kind", kind)
			if name != "" {
				q.Set("name", name)
			}
			var res struct {
				Rows []metricsapi.StatRow `json:"rows"`
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := api.Query(cmd.Context(), "/v1/stat?"+q.Encode(), &res); err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), f.output, res.Rows, func(w io.Writer) { printStat(w, res.Rows, f.all, f.output == "wide") })
		},
	}
	f.bind(cmd, true)
	return cmd
}

// kindAndName reads [KIND] [NAME] or KIND/NAME.
func kindAndName(args []string) (kind, name string, err error) {
	switch len(args) {
	case 0:
		return "workload", "", nil
	case 1:
		if ref, err := metricsapi.ParseRef(args[0]); err == nil && strings.Contains(args[0], "/") {
			return ref.Kind, ref.Name, nil
		}
		kind, err = metricsapi.ParseKind(args[0])
		return kind, "", err
	}
	kind, err = metricsapi.ParseKind(args[0])
	return kind, args[1], err
}

func routesCmd(t *target) *cobra.Command {
	var f vizFlags
	cmd := &cobra.Command{
		Use:   "routes SERVICE",
		Short: "Show the golden metrics of a service's routes, with retries and timeouts",
		Long: `routes shows, for each HTTPRoute and GRPCRoute attached to SERVICE (and the
default route, for requests none matched), the success rate, requests per
second and latency its callers saw — one request however many attempts it
took — and, over --time-window, RETRIES: the share of the attempts sent
that were retries or hedges, and TIMEOUTS: requests ended by the route's
timeouts, per request.`,
		Example: `  trellis routes web
  trellis routes svc/voting --from workload/web -o wide`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.all = false
			q, err := f.query()
			if err != nil {
				return err
			}
			service := args[0]
			if strings.Contains(service, "/") {
				ref, err := metricsapi.ParseRef(service)
				if err != nil {
					return err
				}
				if ref.Kind != "service" {
					return fmt.Errorf("%s: routes are a service's; give a service name", service)
				}
				service = ref.Name
			}
			q.Set("service", service)
			var res struct {
				Rows []metricsapi.RouteRow `json:"rows"`
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := api.Query(cmd.Context(), "/v1/routes?"+q.Encode(), &res); err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), f.output, res.Rows, func(w io.Writer) { printRoutes(w, res.Rows, f.output == "wide") })
		},
	}
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "default", "namespace of the service")
	cmd.Flags().DurationVarP(&f.window, "time-window", "t", metricsapi.DefaultWindow, "window the metrics are computed over")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "table, wide or json")
	cmd.Flags().StringVar(&f.from, "from", "", "only requests from this resource, KIND/NAME")
	return cmd
}

func edgesCmd(t *target) *cobra.Command {
	var f vizFlags
	cmd := &cobra.Command{
		Use:   "edges [workload]",
		Short: "Show which workloads call which, and whether each edge is mutual TLS",
		Long: `edges lists every pair of workloads with HTTP traffic over --time-window:
the source, the destination, and whether the calls were secured by mutual
TLS; -o wide adds the identity the destination saw the source present
(CLIENT_ID) and the one the source verified (SERVER_ID).`,
		Example: `  trellis edges
  trellis edges -A -o wide`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if k, err := metricsapi.ParseKind(args[0]); err != nil || k != "workload" {
					return fmt.Errorf("%s: edges are between workloads", args[0])
				}
			}
			q, err := f.query()
			if err != nil {
				return err
			}
			var res struct {
				Rows []metricsapi.Edge `json:"rows"`
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if err := api.Query(cmd.Context(), "/v1/edges?"+q.Encode(), &res); err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), f.output, res.Rows, func(w io.Writer) { printEdges(w, res.Rows, f.output == "wide") })
		},
	}
	f.bind(cmd, false)
	return cmd
}

// render prints rows as JSON ({"rows": [...]}, never null) or with table.
func render[T any](w io.Writer, output string, rows []T, table func(io.Writer)) error {
	if output == "json" {
		if rows == nil {
			rows = []T{}
		}
		b, err := json.MarshalIndent(map[string]any{"rows": rows}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	table(w)
	return nil
}
