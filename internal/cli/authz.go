package cli

import (
	"cmp"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/control/policy"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

func authzCmd(t *target) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "authz WORKLOAD",
		Short: "Show who may call a workload: its Servers, routes, authorization policies and rate limits",
		Long: `authz shows the inbound policy the control plane serves the proxies of
WORKLOAD (a workload, e.g. what 'trellis run --name' started, or one
instance): each Server that selects it, with its port, access policy and
rate limit, and for each of its routes ("*": the whole Server) the
AuthorizationPolicies that allow calls and the authentications they
require. A port no Server selects follows the proxies' default inbound
policy.`,
		Example: `  trellis authz emoji
  trellis authz web -n shop`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			printAuthz(cmd, args[0], policy.Compile(namespace, *w, st.TrustDomain, objs))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the workload")
	return cmd
}

func printAuthz(cmd *cobra.Command, workload string, p *policyv1.InboundPolicy) {
	out := cmd.OutOrStdout()
	if len(p.GetServers()) == 0 {
		fmt.Fprintf(out, "No Server selects %s: its proxies' default inbound policy decides (trellis run --default-inbound-policy).\n", workload)
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "SERVER\tPORT\tACCESS\tRATE_LIMIT\tROUTE\tAUTHORIZATION_POLICY\tAUTHENTICATIONS")
	for _, s := range p.GetServers() {
		access := "deny"
		if s.GetAudit() {
			access = "audit"
		}
		limit := "-"
		if rl := s.GetRateLimit(); rl != nil {
			limit = fmt.Sprintf("%s (total %s, per identity %s)", rl.GetName(), rate(rl.GetTotal()), rate(rl.GetIdentity()))
		}
		if len(s.GetAuthorizations()) == 0 {
			none := map[string]string{"deny": "(none: every call is denied)", "audit": "(none: every call passes, audited)"}[access]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t*\t%s\t-\n", s.GetName(), s.GetPort(), access, limit, none)
			continue
		}
		for _, a := range s.GetAuthorizations() {
			var auths []string
			for _, au := range a.GetAuthentications() {
				what := append(append([]string{}, au.GetIdentities()...), networks(au.GetNetworks())...)
				auths = append(auths, fmt.Sprintf("%s/%s(%s)", au.GetKind(), au.GetName(), cmp.Or(strings.Join(what, ","), "nobody")))
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.GetName(), s.GetPort(), access, limit, cmp.Or(a.GetRoute(), "*"), a.GetName(), strings.Join(auths, " and "))
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
