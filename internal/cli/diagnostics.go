package cli

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
)

func diagnosticsCmd(t *target) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diagnostics",
		Short: "Inspect the mesh's components",
	}
	var namespace string
	pm := &cobra.Command{
		Use:   "proxy-metrics WORKLOAD",
		Short: "Print the raw metrics of a workload's proxies",
		Long: `proxy-metrics prints the Prometheus metrics of the proxy of one instance
(web-0), or of every instance of a workload (web), as the proxy exposes them
on its admin port.`,
		Example: `  trellis diagnostics proxy-metrics web-0
  trellis diagnostics proxy-metrics web | grep response_total`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, done, err := t.api(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			items, err := api.List(cmd.Context(), resources.KindWorkload, namespace)
			if err != nil {
				return err
			}
			var instances []string
			for _, it := range items {
				if it.Metadata.Name == args[0] || it.Metadata.Labels[resources.WorkloadLabel] == args[0] {
					instances = append(instances, it.Metadata.Name)
				}
			}
			if len(instances) == 0 {
				return fmt.Errorf("no workload or instance %q in namespace %s (see 'trellis get workloads -n %s')", args[0], namespace, namespace)
			}
			out := cmd.OutOrStdout()
			for _, inst := range instances {
				if len(instances) > 1 {
					fmt.Fprintf(out, "#\n# POD %s (%d of %d)\n#\n", inst, slices.Index(instances, inst)+1, len(instances))
				}
				body, err := api.Stream(cmd.Context(), "/v1/proxy-metrics/"+url.PathEscape(namespace)+"/"+url.PathEscape(inst))
				if err != nil {
					return err
				}
				_, err = io.Copy(out, body)
				body.Close()
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	pm.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the workload")
	cmd.AddCommand(pm)
	return cmd
}

func prometheusConfigCmd(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "prometheus-config",
		Short: "Print a Prometheus configuration that scrapes every proxy",
		Long: `prometheus-config prints a prometheus.yml for an external Prometheus server:
it scrapes every proxy the running control plane knows, listed in a file_sd
targets file the control plane keeps up to date. Start the control plane
with --prometheus-url pointing at that server to have stat, routes and
edges query it instead of the embedded store.`,
		Example: `  trellis prometheus-config > prometheus.yml
  prometheus --config.file=prometheus.yml &
  trellis up --prometheus-url http://localhost:9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := apiClient(*dataDir).Status(cmd.Context())
			if err != nil {
				return err
			}
			interval, err := time.ParseDuration(st.ScrapeInterval)
			if err != nil {
				return fmt.Errorf("the control plane's scrape interval %q: %w", st.ScrapeInterval, err)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), metricsapi.PrometheusConfig(st.TargetsFile, interval))
			return err
		},
	}
}
