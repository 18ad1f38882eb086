package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/demo"
)

func demoCmd() *cobra.Command {
	o := demo.Options{}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a sample application meshed with Trellis on this machine",
		Long: `demo starts a local control plane (in a temporary data directory) and a
sample application — web, an HTTP/JSON front end, calling emoji (two
replicas) and voting over gRPC, plus a traffic generator calling web — each
instance next to its own proxy, every call between them mutual TLS. As
root each instance runs in its own network namespace with transparent
interception and DNS names; otherwise in explicit mode on loopback.

voting fails --fail-rate of its calls and is slower than the others, so the
mesh has something to show. demo prints what to try; Ctrl-C stops
everything and removes every process, namespace, link and file it created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.RPS <= 0 || o.RPS > 10000 {
				return fmt.Errorf("--rps %d: must be between 1 and 10000", o.RPS)
			}
			if o.FailRate < 0 || o.FailRate > 1 {
				return fmt.Errorf("--fail-rate %v: must be between 0 and 1", o.FailRate)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if o.ProxyExe, err = sibling(proxyBinary); err != nil {
				return err
			}
			if o.ControlExe, err = sibling(controlBinary); err != nil {
				return err
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			o.LogLevel = strings.ToLower(level.String())
			o.Exe, o.Out, o.Err, o.Log = exe, cmd.OutOrStdout(), cmd.ErrOrStderr(), textLogger(level)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demo.Run(ctx, o)
		},
	}
	cmd.Flags().IntVar(&o.RPS, "rps", 20, "requests per second the traffic generator sends to web")
	cmd.Flags().Float64Var(&o.FailRate, "fail-rate", 0.05, "share of votes the voting service fails")
	cmd.Flags().StringVar(&o.Network, "network", "auto", "auto (network namespaces when root), bridge, or none (explicit mode)")
	o.Bridge.Flags(cmd.Flags())
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log what the control plane does")
	cmd.Flags().StringVar(&o.PrometheusURL, "prometheus-url", "", "query this Prometheus server for stat, routes and edges instead of the embedded store (configure it with `trellis prometheus-config`)")
	cmd.Flags().DurationVar(&o.ScrapeInterval, "metrics-scrape-interval", 5*time.Second, "how often the embedded store scrapes the proxies")
	return cmd
}
