package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/policy"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

func authzCmd(t *target) *cobra.Command {
	var namespace string
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "authz WORKLOAD",
		Short: "Show who may call a workload and what its policies decided: Servers, routes, authorization policies, rate limits",
		Long: `authz shows the inbound policy the control plane serves the proxies of
WORKLOAD (a workload, e.g. what 'trellis run --name' started, or one
instance): each Server that selects it, with its port, access policy and
rate limit, and for each of its routes ("*": the whole Server) the
AuthorizationPolicies that allow calls and the authentications they
require. A port no Server selects follows the proxies' default inbound
policy.

RPS is what the workload's proxies decided over --time-window, per
second (requests, and connections of opaque ports): the calls each
authorization let through, [UNAUTHORIZED] those none allowed (denied),
[AUDIT: would deny] those an audit Server let through although no
authorization allowed them, and [PROBE] the health probes allowed
whatever the policy. Rows of a default policy (no Server) are named
default:POLICY.`,
		Example: `  trellis authz emoji
  trellis authz web -n shop -t 5m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if window < time.Second {
				return fmt.Errorf("--time-window %v: must be at least 1s", window)
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			st, err := api.Status(cmd.Context())
			if err != nil {
				return err
			}
			wls, err := api.List(cmd.Context(), resources.KindWorkload, namespace)
			if err != nil {
				return err
			}
			var w *store.Resource
			for i := range wls {
				if wls[i].Metadata.Name == args[0] || resources.WorkloadOf(wls[i].Metadata) == args[0] {
					w = &wls[i]
					break
				}
			}
			if w == nil {
				return fmt.Errorf("no workload %q in namespace %s", args[0], namespace)
			}
			objs := policy.Objects{}
			for _, kind := range policy.Kinds {
				if objs[kind], err = api.List(cmd.Context(), kind, namespace); err != nil {
					return err
				}
			}
			var decided struct {
				Rows []metricsapi.AuthzRow `json:"rows"`
			}
			q := url.Values{"workload": {resources.WorkloadOf(w.Metadata)}, "namespace": {namespace}, "window": {window.String()}}
			if err := api.Query(cmd.Context(), "/v1/authz?"+q.Encode(), &decided); err != nil {
				return fmt.Errorf("what the proxies decided: %w", err)
			}
			printAuthz(cmd.OutOrStdout(), args[0], policy.Compile(namespace, *w, st.TrustDomain, objs), decided.Rows)
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the workload")
	cmd.Flags().DurationVarP(&window, "time-window", "t", metricsapi.DefaultWindow, "window the decisions are counted over, e.g. 10s, 1m, 1h")
	return cmd
}

// decision keys a rate of AuthzRows: a Server (or default:POLICY), a
// route ("*": none) and what decided.
type decision struct{ server, route, by string }

// Pseudo-authorizations of the rows that are not an AuthorizationPolicy.
const (
	byDenial = "[UNAUTHORIZED]"
	byAudit  = "[AUDIT: would deny]"
	byProbe  = "[PROBE]"
)

func decisionOf(r metricsapi.AuthzRow) decision {
	d := decision{server: r.Server, route: cmp.Or(r.Route, "*"), by: r.Authz}
	if r.ServerKind != "server" {
		d.server = "default:" + r.Server
	}
	switch {
	case r.Denied:
		d.by = byDenial
	case r.AuthzKind == "audit":
		d.by = byAudit
	case r.Authz == "probe" && r.AuthzKind == "default":
		d.by = byProbe
	case r.AuthzKind == "default":
		d.by = "default:" + r.Authz
	}
	return d
}

func printAuthz(out io.Writer, workload string, p *policyv1.InboundPolicy, decided []metricsapi.AuthzRow) {
	rates := map[decision]float64{}
	var order []decision // as the API sorted them
	for _, r := range decided {
		d := decisionOf(r)
		if _, ok := rates[d]; !ok {
			order = append(order, d)
		}
		rates[d] += r.PerSec
	}
	shown := map[decision]bool{}
	// rpsOf is the rate of the decisions match accepts, shown from then on.
	rpsOf := func(match func(decision) bool) string {
		sum, any := 0.0, false
		for _, d := range order {
			if match(d) {
				sum, any, shown[d] = sum+rates[d], true, true
			}
		}
		if !any {
			return "-"
		}
		return strconv.FormatFloat(sum, 'f', 1, 64) + "rps"
	}
	rps := func(d decision) string { return rpsOf(func(x decision) bool { return x == d }) }
	if len(p.GetServers()) == 0 {
		fmt.Fprintf(out, "No Server selects %s: its proxies' default inbound policy decides (trellis run --default-inbound-policy).\n", workload)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "SERVER\tPORT\tACCESS\tRATE_LIMIT\tROUTE\tAUTHORIZATION_POLICY\tAUTHENTICATIONS\tRPS")
	for _, s := range p.GetServers() {
		access := "deny"
		if s.GetAudit() {
			access = "audit"
		}
		limit := "-"
		if rl := s.GetRateLimit(); rl != nil {
			limit = fmt.Sprintf("%s (total %s, per identity %s)", rl.GetName(), rate(rl.GetTotal()), rate(rl.GetIdentity()))
		}
		head := fmt.Sprintf("%s\t%d\t%s\t%s", s.GetName(), s.GetPort(), access, limit)
		if len(s.GetAuthorizations()) == 0 {
			none := map[string]string{"deny": "(none: every call is denied)", "audit": "(none: every call passes, audited)"}[access]
			fmt.Fprintf(tw, "%s\t*\t%s\t-\t-\n", head, none)
		}
		for _, a := range s.GetAuthorizations() {
			var auths []string
			for _, au := range a.GetAuthentications() {
				what := append(append([]string{}, au.GetIdentities()...), networks(au.GetNetworks())...)
				auths = append(auths, fmt.Sprintf("%s/%s(%s)", au.GetKind(), au.GetName(), cmp.Or(strings.Join(what, ","), "nobody")))
			}
			_, route, _ := strings.Cut(a.GetRoute(), "/")
			d := decision{s.GetName(), cmp.Or(route, "*"), a.GetName()}
			r := rps(d)
			if route == "" { // the whole Server's: what it allowed on any of its routes
				r = rpsOf(func(x decision) bool { return x.server == d.server && x.by == d.by })
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", head, d.route, a.GetName(), strings.Join(auths, " and "), r)
		}
		for _, d := range order {
			if d.server == s.GetName() && !shown[d] {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t%s\n", head, d.route, d.by, rps(d))
			}
		}
	}
	// What no Server of today's policy explains: default policies, and
	// Servers since removed.
	for _, d := range order {
		if !shown[d] {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t%s\t-\t%s\n", d.server, d.route, d.by, rps(d))
		}
	}
}

func rate(n uint32) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/s", n)
}

func networks(ns []*policyv1.Network) []string {
	var out []string
	for _, n := range ns {
		s := n.GetCidr()
		if len(n.GetExcept()) > 0 {
			s += " except " + strings.Join(n.GetExcept(), " ")
		}
		out = append(out, s)
	}
	return out
}
