// Package cli is the trellis command line.
package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/demo"
)

// New returns the root command.
func New() *cobra.Command {
	root := &cobra.Command{
		Use:           "trellis",
		Short:         "Trellis: a service mesh — reliability, observability and security for every service",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(demoCmd(), buildinfo.Command())
	return root
}

func demoCmd() *cobra.Command {
	o := demo.Options{}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a sample application meshed with Trellis proxies on this machine",
		Long: `demo starts two sample services — web, which calls api — each behind a
trellis-proxy, plus a traffic generator, and prints what the traffic looks
like every few seconds. Everything runs in this process on loopback ports;
Ctrl-C stops it all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			o.Out = cmd.OutOrStdout()
			if o.RPS <= 0 || o.RPS > 10000 {
				return fmt.Errorf("--rps %d: must be between 1 and 10000", o.RPS)
			}
			if o.FailRate < 0 || o.FailRate > 1 {
				return fmt.Errorf("--fail-rate %v: must be between 0 and 1", o.FailRate)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demo.Run(ctx, o)
		},
	}
	cmd.Flags().IntVar(&o.RPS, "rps", 20, "requests per second sent to the web service")
	cmd.Flags().Float64Var(&o.FailRate, "fail-rate", 0.05, "share of api requests that fail")
	cmd.Flags().DurationVar(&o.Report, "report-every", 5*time.Second, "how often to print a summary")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log what the proxies do")
	return cmd
}
