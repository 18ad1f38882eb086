package cli

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/web"
)

// webCmd serves the dashboard on its own, in front of a control plane's
// read-only API elsewhere.
func webCmd() *cobra.Command {
	var o web.Options
	var apiURL string
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Serve the dashboard in front of a control plane's read-only API",
		Long: `web serves the dashboard (the pages 'all' and 'up' serve on their own
--web-addr) on its own, relaying its API calls to --api-url: the read-only
API of a destination service (its --view-addr), e.g. in a cluster
http://trellis-destination.trellis.svc:8085. Like the plane's, it binds
loopback unless --web-expose, answers only requests addressed to its own
host or a --web-host name, and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := url.Parse(apiURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("--api-url %q: want the read-only API's URL, such as http://trellis-destination.trellis.svc:8085", apiURL)
			}
			if o.Addr == "" {
				return errors.New("--web-addr: required")
			}
			w, err := web.Start(o, web.Proxy(u))
			if err != nil {
				return fmt.Errorf("--web-addr: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard on %s, reading %s\n", w.URL(), u)
			return w.Serve(ctx)
		},
	}
	o.Flags(cmd.Flags(), "127.0.0.1:50750")
	cmd.Flags().StringVar(&apiURL, "api-url", "", "the read-only API the dashboard reads (a destination service's --view-addr)")
	return cmd
}
