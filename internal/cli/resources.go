package cli

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// kindAliases maps what users type to kinds.
var kindAliases = map[string]string{
	"service": resources.KindService, "services": resources.KindService, "svc": resources.KindService,
	"workload": resources.KindWorkload, "workloads": resources.KindWorkload, "wl": resources.KindWorkload,
	"httproute": resources.KindHTTPRoute, "httproutes": resources.KindHTTPRoute,
	"grpcroute": resources.KindGRPCRoute, "grpcroutes": resources.KindGRPCRoute,
	"server": resources.KindServer, "servers": resources.KindServer, "srv": resources.KindServer,
	"authorizationpolicy": resources.KindAuthorizationPolicy, "authorizationpolicies": resources.KindAuthorizationPolicy,
	"meshtlsauthentication": resources.KindMeshTLSAuthentication, "meshtlsauthentications": resources.KindMeshTLSAuthentication,
	"networkauthentication": resources.KindNetworkAuthentication, "networkauthentications": resources.KindNetworkAuthentication,
	"httplocalratelimitpolicy": resources.KindHTTPLocalRateLimitPolicy, "httplocalratelimitpolicies": resources.KindHTTPLocalRateLimitPolicy,
	"egressnetwork": resources.KindEgressNetwork, "egressnetworks": resources.KindEgressNetwork,
}

// kindList names the kinds as get's help does.
const kindList = "services (svc), workloads (wl), httproutes, grpcroutes, servers (srv), authorizationpolicies, " +
	"meshtlsauthentications, networkauthentications, httplocalratelimitpolicies, egressnetworks"

func kindOf(s string) (string, error) {
	if k, ok := kindAliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q: one of %s", s, kindList)
}

func applyCmd(dataDir *string) *cobra.Command {
	var files []string
	var namespace string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from YAML or JSON files",
		Long: `apply reads resources (YAML, several documents separated by ---, or JSON)
from each -f FILE ('-' is standard input) and creates or replaces them, the
way kubectl apply does. Every object is checked first — a malformed file, an
unknown kind, an invalid name or a spec that fails validation is reported
naming the file, the document and the field. The objects are written in
one transaction: all of them, or — on any error — none.`,
		Example: `  trellis apply -f services.yaml
  cat web.yaml | trellis apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("give at least one -f FILE")
			}
			var items []store.Resource
			var origin []string
			for _, f := range files {
				objs, err := readResources(cmd, f, namespace)
				if err != nil {
					return err
				}
				for i, o := range objs {
					items = append(items, o)
					origin = append(origin, fmt.Sprintf("%s: document %d (%s %q)", f, i+1, o.Kind, o.Metadata.Name))
				}
			}
			if len(items) == 0 {
				return errors.New("no resources in the input")
			}
			applied, err := apiClient(*dataDir).Apply(cmd.Context(), items)
			if err != nil {
				return explainItem(err, origin)
			}
			for _, a := range applied {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(a.Object.Kind), a.Object.Metadata.Name, a.Action)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file to apply ('-' for standard input; repeatable)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of objects that name none")
	return cmd
}

// explainItem turns "object N: ..." from the API into the file and
// document it came from.
func explainItem(err error, origin []string) error {
	msg := err.Error()
	var n int
	if _, scanErr := fmt.Sscanf(msg, "object %d:", &n); scanErr == nil && n >= 1 && n <= len(origin) {
		_, rest, _ := strings.Cut(msg, ": ")
		return fmt.Errorf("%s: %s (nothing was applied)", origin[n-1], rest)
	}
	return err
}

// readResources decodes every document of file (or stdin for "-").
func readResources(cmd *cobra.Command, file, namespace string) ([]store.Resource, error) {
	var r io.Reader
	if file == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	dec := k8syaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []store.Resource
	for doc := 1; ; doc++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			doc--
			continue
		}
		var res store.Resource
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&res); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		if res.Metadata.Namespace == "" && (resources.Kinds{}).Namespaced(res.Kind) {
			res.Metadata.Namespace = namespace
		}
		out = append(out, res)
	}
}

func getCmd(t *target) *cobra.Command {
	var namespace, output string
	var all bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List resources, or show one",
		Long: `get lists the resources of KIND in a namespace, or every namespace with
-A, or shows the one named NAME. -o yaml or -o json prints the objects as
stored. KIND is one of ` + kindList + `.`,
		Example: `  trellis get workloads -A
  trellis get service web -o yaml`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kindOf(args[0])
			if err != nil {
				return err
			}
			switch output {
			case "table", "wide", "yaml", "json":
			default:
				return fmt.Errorf("-o %q: must be table, wide, yaml or json", output)
			}
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if len(args) == 2 {
				r, err := api.Get(cmd.Context(), store.Key{Kind: kind, Namespace: namespace, Name: args[1]})
				if err != nil {
					return err
				}
				return printResources(cmd.OutOrStdout(), kind, []store.Resource{r}, output, true)
			}
			ns := namespace
			if all {
				ns = ""
			}
			items, err := api.List(cmd.Context(), kind, ns)
			if err != nil {
				return err
			}
			return printResources(cmd.OutOrStdout(), kind, items, output, false)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, yaml or json")
	return cmd
}

func printResources(w io.Writer, kind string, items []store.Resource, output string, single bool) error {
	switch output {
	case "json":
		var v any = map[string]any{"items": items}
		if single {
			v = items[0]
		}
		if items == nil {
			v = map[string]any{"items": []store.Resource{}}
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		_, err := fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		for i, it := range items {
			b, err := json.Marshal(it)
			if err != nil {
				return err
			}
			y, err := yaml.JSONToYAML(b)
			if err != nil {
				return err
			}
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			w.Write(y)
		}
		return nil
	}
	if len(items) == 0 {
		plural := strings.ToLower(kind) + "s"
		if p, ok := strings.CutSuffix(plural, "ys"); ok {
			plural = p + "ies"
		}
		fmt.Fprintf(w, "no %s\n", plural)
		return nil
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i].Metadata, items[j].Metadata
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	defer tw.Flush()
	wide := output == "wide"
	switch kind {
	case resources.KindService:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tCLUSTER-IP\tPORTS\tAGE")
		for _, it := range items {
			var s resources.ServiceSpec
			json.Unmarshal(it.Spec, &s)
			var ports []string
			for _, p := range s.Ports {
				ports = append(ports, portLabel(p.Port, p.Protocol))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Metadata.Namespace, it.Metadata.Name, dash(s.ClusterIP), strings.Join(ports, ","), age(it.Metadata.CreationTimestamp))
		}
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tPARENTS\tRULES\tAGE")
		for _, it := range items {
			var spec struct {
				ParentRefs []struct {
					Name string `json:"name"`
					Port int    `json:"port"`
				} `json:"parentRefs"`
				Rules []json.RawMessage `json:"rules"`
			}
			json.Unmarshal(it.Spec, &spec)
			var parents []string
			for _, p := range spec.ParentRefs {
				if p.Port != 0 {
					parents = append(parents, fmt.Sprintf("%s:%d", p.Name, p.Port))
				} else {
					parents = append(parents, p.Name)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", it.Metadata.Namespace, it.Metadata.Name, strings.Join(parents, ","), len(spec.Rules), age(it.Metadata.CreationTimestamp))
		}
	case resources.KindWorkload:
		header := "NAMESPACE\tNAME\tSERVICE\tADDRESS\tPORTS\tRESTARTS\tAGE"
		if wide {
			header += "\tIDENTITY\tPROXY-ADMIN\tAPP-USER\tLAST-EXIT"
		}
		fmt.Fprintln(tw, header)
		for _, it := range items {
			var s resources.WorkloadSpec
			json.Unmarshal(it.Spec, &s)
			var ports []string
			for _, p := range s.Ports {
				ports = append(ports, fmt.Sprintf("%d→%d", p.Port, p.TargetPort))
			}
			restarts := it.Metadata.Labels[resources.RestartsLabel]
			if restarts == "" {
				restarts = "0"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", it.Metadata.Namespace, it.Metadata.Name, dash(s.Service), s.Address, dash(strings.Join(ports, ",")),
				restarts, age(it.Metadata.CreationTimestamp))
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s:%d\t%s\t%s", s.Identity, s.Address, s.AdminPort, appUser(it.Metadata.Labels), dash(it.Metadata.Labels[resources.LastExitLabel]))
			}
			fmt.Fprintln(tw)
		}
	case resources.KindServer:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tPORT\tPROXY-PROTOCOL\tACCESS-POLICY\tSELECTOR\tAGE")
		for _, it := range items {
			var s resources.ServerSpec
			json.Unmarshal(it.Spec, &s)
			selector := "(every workload)"
			if sel, err := metav1.LabelSelectorAsSelector(s.PodSelector); err == nil && !sel.Empty() {
				selector = sel.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Metadata.Namespace, it.Metadata.Name, s.Port.String(), cmp.Or(s.ProxyProtocol, "unknown"),
				cmp.Or(s.AccessPolicy, "deny"), selector, age(it.Metadata.CreationTimestamp))
		}
	default:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tAGE")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Metadata.Namespace, it.Metadata.Name, age(it.Metadata.CreationTimestamp))
		}
	}
	return nil
}

// appUser is who a workload's application runs as: NAME(UID), or "-"
// when nothing says (a workload not started by trellis run).
func appUser(l map[string]string) string {
	uid, ok := l[resources.AppUIDLabel]
	switch {
	case !ok:
		return "-"
	case uid == "0":
		return "root(0)"
	}
	return fmt.Sprintf("%s(%s)", dash(l[resources.AppUserLabel]), uid)
}

func portLabel(port int, proto string) string {
	if proto == "" {
		return fmt.Sprint(port)
	}
	return fmt.Sprintf("%d/%s", port, proto)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age renders how long ago t was, kubectl style.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func deleteCmd(dataDir *string) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:     "delete KIND NAME",
		Short:   "Delete a resource",
		Example: `  trellis delete service web`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kindOf(args[0])
			if err != nil {
				return err
			}
			if err := apiClient(*dataDir).Delete(cmd.Context(), store.Key{Kind: kind, Namespace: namespace, Name: args[1]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s deleted\n", strings.ToLower(kind), args[1])
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	return cmd
}
