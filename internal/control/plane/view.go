package plane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/web"
)

// listenView binds --view-addr and --web-addr, if set.
func (p *Plane) listenView() error {
	if p.opts.ViewAddr != "" {
		ln, err := net.Listen("tcp", p.opts.ViewAddr)
		if err != nil {
			return fmt.Errorf("--view-addr: %w", err)
		}
		p.view = ln
	}
	if p.opts.Web.Addr != "" {
		w, err := web.Start(p.opts.Web, p.api.View())
		if err != nil {
			return fmt.Errorf("--web-addr: %w", err)
		}
		p.web = w
	}
	return nil
}

// serveView answers the API's read-only calls on --view-addr until ctx
// ends; streaming calls (tap) end with it.
func (p *Plane) serveView(ctx context.Context) error {
	srv := &http.Server{Handler: p.api.View(), ReadHeaderTimeout: 10 * time.Second}
	return localapi.ServeUntil(ctx, srv, p.view, "view API")
}
