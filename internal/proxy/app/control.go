package app

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/register"
)

// control is the proxy's connection to the control plane's destination
// service: discovery for the outbound stack, and the workload's
// registration.
type control struct {
	conn     *grpc.ClientConn
	resolver *discover.Resolver
	stop     context.CancelFunc
}

// newControl connects (lazily: nothing is dialled before the first call,
// which waits for the certificate) to cfg.DestinationAddr over mTLS.
func newControl(cfg *config.Config, m *identity.Manager, log *slog.Logger) (*control, error) {
	serverID := meshid.IdentityServiceID(m.ID().TrustDomain)
	conn, err := grpc.NewClient(cfg.DestinationAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(m.ClientConfig(serverID))),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			// Attempts that stall are given up on soon, for fresh ones
			// within the same (longer) registration call.
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("destination-addr %q: %w", cfg.DestinationAddr, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	res := discover.NewResolver(ctx, discover.Config{
		Client: destinationv1.NewDestinationClient(conn), Namespace: m.ID().Namespace, Caller: m.ID().Namespace + "/" + m.ID().ServiceAccount,
		Ready: m.Ready(), Balance: cfg.Balance,
		ClusterDomain: cfg.ClusterDomain, Log: log,
	})
	return &control{conn: conn, resolver: res, stop: stop}, nil
}

// registrar returns the registration of cfg's workload, whose proxy
// accepts mTLS on inbound and serves admin on adminAddr.
func (c *control) registrar(cfg *config.Config, m *identity.Manager, inbound, adminAddr, tapAddr net.Addr, log *slog.Logger) *register.Registrar {
	req := &destinationv1.RegisterRequest{
		Name: cfg.Workload, Service: cfg.Service, Address: cfg.WorkloadAddress, Labels: cfg.WorkloadLabels,
		MeshPort: uint32(portOf(inbound)), AdminPort: uint32(portOf(adminAddr)),
	}
	if tapAddr != nil {
		req.TapPort = uint32(portOf(tapAddr))
	}
	for _, p := range cfg.ServicePorts {
		req.Ports = append(req.Ports, &destinationv1.Port{Port: uint32(p.Port), TargetPort: uint32(p.TargetPort), Protocol: p.Protocol, Name: p.Name})
	}
	// A client-only workload (no service port) has no application to wait for.
	var appAddr string
	if len(cfg.ServicePorts) > 0 {
		appAddr = cmp.Or(cfg.AppAddr, net.JoinHostPort(cfg.WorkloadAddress, strconv.Itoa(int(cfg.ServicePorts[0].TargetPort))))
	}
	return register.New(register.Config{
		Client: destinationv1.NewRegistryClient(c.conn), Request: req, AppAddr: appAddr, Ready: m.Ready(), Log: log,
	})
}

func (c *control) close() {
	c.stop()
	c.conn.Close()
}

func portOf(a net.Addr) uint16 {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return 0
	}
	return ap.Port()
}
