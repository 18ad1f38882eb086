package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/tap"
)

func explainCmd(t *target) *cobra.Command {
	var namespace, method, path, authority, to, direction, output string
	var limit int
	cmd := &cobra.Command{
		Use:   "explain TARGET",
		Short: "Explain what the proxies decided for recent requests: route, backend, endpoints, retries, and the policy that allowed or denied each",
		Long: `explain shows, newest first, what the proxies of TARGET (workload/NAME
or NAME, service/NAME, namespace/NAME or pod/INSTANCE) decided for the
requests they handled most recently — each proxy keeps the last 1,024 of
each direction:

  outbound (the application sent it): the route and rule that matched,
    the backend the rule chose, every attempt with its endpoint, status
    and why it was made (retry, hedge), why none was made (fail fast),
    and the endpoints failure accrual ejected because of it;
  inbound (the application received it): the client, the Server (or
    default policy) of the port and its route, and the authorization
    that allowed the request — or why it was denied (403), refused by a
    rate limit (429) or matched no route (404); an audit Server's
    would-be denials say so.

The filters select requests as tap's do.`,
		Example: `  trellis explain web
  trellis explain workload/web --direction inbound --path /api/vote
  trellis explain pod/web-0 --limit 5 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: must be table or json", output)
			}
			if limit < 1 || limit > 2048 {
				return fmt.Errorf("--limit %d: must be 1 to 2048", limit)
			}
			target := args[0]
			if !strings.Contains(target, "/") {
				target = "workload/" + target
			}
			q := url.Values{"target": {target}, "namespace": {namespace}, "limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"method": method, "path": path, "authority": authority, "to": to, "direction": direction} {
				if v != "" {
					q.Set(k, v)
				}
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			var res struct {
				Decisions []tap.Explained `json:"decisions"`
				Errors    []string        `json:"errors"`
			}
			if err := api.Query(cmd.Context(), "/v1/explain?"+q.Encode(), &res); err != nil {
				return err
			}
			if len(res.Decisions) == 0 && len(res.Errors) > 0 {
				return fmt.Errorf("no proxy of %s answered: %s", target, strings.Join(res.Errors, "; "))
			}
			for _, e := range res.Errors {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+e)
			}
			return render(cmd.OutOrStdout(), output, res.Decisions, func(w io.Writer) { printExplained(w, res.Decisions) })
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&namespace, "namespace", "n", "default", "namespace of the target")
	fs.StringVar(&method, "method", "", "only requests with this method")
	fs.StringVar(&path, "path", "", "only requests whose path starts with this")
	fs.StringVar(&authority, "authority", "", "only requests for this authority (Host)")
	fs.StringVar(&to, "to", "", "only requests to an authority or endpoint containing this")
	fs.StringVar(&direction, "direction", "", "only inbound (received) or outbound (sent) requests")
	fs.IntVar(&limit, "limit", 20, "how many requests to explain, newest first")
	fs.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printExplained(w io.Writer, list []tap.Explained) {
	if len(list) == 0 {
		fmt.Fprintln(w, "No recent requests match.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	for _, e := range list {
		status := "-"
		if e.Status != 0 {
			status = strconv.Itoa(e.Status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s%s\t%s\n", e.Time.Format("15:04:05.000"), e.Workload, e.Direction, e.Method, e.Authority, e.Path, status)
		if e.Route != "" {
			route := e.Route
			if e.RouteKind != "" {
				route += " (" + e.RouteKind + ")"
			}
			if e.Rule != "" {
				route += ", rule " + e.Rule
			}
			fmt.Fprintf(tw, "\t\troute\t%s\n", route)
		}
		if e.Backend != "" {
			fmt.Fprintf(tw, "\t\tbackend\t%s\n", e.Backend)
		}
		for i, a := range e.Attempts {
			why := ""
			if a.Why != "" {
				why = " (" + a.Why + ")"
			}
			grpc := ""
			if a.GRPCStatus != 0 {
				grpc = " grpc-status " + strconv.Itoa(a.GRPCStatus)
			}
			fmt.Fprintf(tw, "\t\tattempt %d\t%s → %d%s%s\n", i+1, a.Endpoint, a.Status, grpc, why)
		}
		if e.FailFast != "" {
			fmt.Fprintf(tw, "\t\tno attempt\t%s\n", e.FailFast)
		}
		if len(e.Ejected) > 0 {
			fmt.Fprintf(tw, "\t\tejected\t%s\n", strings.Join(e.Ejected, ", "))
		}
		if e.Client != "" || e.ClientID != "" {
			fmt.Fprintf(tw, "\t\tclient\t%s\n", strings.TrimSpace(e.Client+" "+cmp.Or(e.ClientID, "(no mesh identity)")))
		}
		if p := e.Policy; p != nil {
			fmt.Fprintf(tw, "\t\tpolicy\t%s\n", explainPolicy(p))
		}
	}
}

// explainPolicy says in words how an inbound request's authorization went.
func explainPolicy(p *tap.Policy) string {
	on := "Server " + p.Server
	if name, ok := strings.CutPrefix(p.Server, "default:"); ok {
		on = "default policy " + name
	}
	if p.Route != "" {
		on += ", route " + p.Route
	}
	switch {
	case p.RateLimit != "":
		return "allowed on " + on + " by " + p.Authorization + ", then refused by rate limit " + p.RateLimit
	case p.Allowed && p.Authorization == "audit":
		return "let through by audit on " + on + ": it would be denied, " + p.Reason
	case p.Allowed && p.Authorization == "probe":
		return "allowed on " + on + " as a health probe"
	case p.Allowed:
		return "allowed on " + on + " by " + p.Authorization
	}
	return "denied on " + on + ": " + p.Reason
}
