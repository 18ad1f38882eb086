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
		ln, err := web.Listen(p.opts.Web)
		if err != nil {
			return err
		}
		p.web = ln
	}
	return nil
}

// serveView answers the API's read-only calls on --view-addr until ctx
// ends; streaming calls (tap) end with it.
func (p *Plane) serveView(ctx context.Context) error {
	srv := &http.Server{Handler: p.api.View(), ReadHeaderTimeout: 10 * time.Second}
	return localapi.ServeUntil(ctx, srv, p.view, "view API")
}

// serveWeb serves the dashboard on --web-addr until ctx ends.
func (p *Plane) serveWeb(ctx context.Context) error {
	srv := &http.Server{Handler: web.Handler(p.api.View(), p.web.Addr(), p.opts.Web.Hosts), ReadHeaderTimeout: 10 * time.Second}
	return localapi.ServeUntil(ctx, srv, p.web, "dashboard")
}
