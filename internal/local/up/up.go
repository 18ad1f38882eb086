// Package up starts the local-mode control plane — what `trellis up` and
// `trellis demo` run: every control-plane component in one process and,
// as root, the bridge network that instances' network namespaces join, with
// DNS for service names on the bridge's address. Stopping it removes the
// bridge and any namespace a crashed `trellis run` left behind.
package up

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/plane"
	"github.com/trellis-mesh/trellis/internal/control/registry"
	"github.com/trellis-mesh/trellis/internal/local/netns"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
)

// DefaultControlPort is the gRPC port of identity and destination.
const DefaultControlPort = 8086

// Options configure a local control plane.
type Options struct {
	Plane plane.Options
	// Network is "auto" (a bridge when root), "bridge" or "none".
	Network     string
	ControlPort int
	Bridge      netns.BridgeNetwork
	// DefaultInboundPolicy is the mesh's default inbound policy ("": the
	// proxies' own, all-unauthenticated).
	DefaultInboundPolicy string
	// NamespaceInboundPolicies are namespaces' default inbound policies,
	// before the mesh's.
	NamespaceInboundPolicies map[string]string
}

// Up is a started local control plane.
type Up struct {
	plane  *plane.Plane
	bridge string
	log    *slog.Logger
}

// Start binds everything; on error nothing is left behind.
func Start(ctx context.Context, o Options, log *slog.Logger) (*Up, error) {
	bridged := false
	switch o.Network {
	case "", "auto":
		bridged = os.Geteuid() == 0
	case "bridge":
		if os.Geteuid() != 0 {
			return nil, errors.New("--network bridge needs root")
		}
		bridged = true
	case "none":
	default:
		return nil, fmt.Errorf("--network %q: must be auto, bridge or none", o.Network)
	}
	if o.ControlPort < 0 || o.ControlPort > 65535 {
		return nil, fmt.Errorf("--control-port %d: not a port", o.ControlPort)
	}
	if o.DefaultInboundPolicy != "" && !slices.Contains(authz.Policies, o.DefaultInboundPolicy) {
		return nil, fmt.Errorf("--default-inbound-policy %q: must be one of %s", o.DefaultInboundPolicy, strings.Join(authz.Policies, ", "))
	}
	for ns, p := range o.NamespaceInboundPolicies {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("--namespace-inbound-policy %s=%s: %q is not a namespace: %s", ns, p, ns, strings.Join(errs, "; "))
		}
		if !slices.Contains(authz.Policies, p) {
			return nil, fmt.Errorf("--namespace-inbound-policy %s=%s: the policy must be one of %s", ns, p, strings.Join(authz.Policies, ", "))
		}
	}
	po := o.Plane
	po.DefaultInboundPolicy, po.NamespaceInboundPolicies = o.DefaultInboundPolicy, o.NamespaceInboundPolicies
	host := "127.0.0.1"
	u := &Up{log: log}
	if bridged {
		bridge, network, err := o.Bridge.Parse()
		if err != nil {
			return nil, err
		}
		if network.Overlaps(registry.DefaultServiceCIDR) {
			return nil, fmt.Errorf("--network-cidr %s overlaps the services' virtual addresses (%s)", network, registry.DefaultServiceCIDR)
		}
		gw := netip.PrefixFrom(network.Addr().Next(), network.Bits())
		dataDir, err := filepath.Abs(po.Identity.DataDir)
		if err != nil {
			return nil, err
		}
		adopted, err := netns.EnsureBridge(ctx, bridge, gw, dataDir)
		if err != nil {
			return nil, err
		}
		if adopted {
			log.Info("adopted the bridge and the instances still running on it", "bridge", bridge, "instances", len(netns.Attached(bridge)))
		}
		u.bridge = bridge
		host = gw.Addr().String()
		po.DNSAddr = net.JoinHostPort(host, "53")
		po.Network, po.Bridge = network, bridge
	}
	po.Identity.Addr = net.JoinHostPort(host, strconv.Itoa(o.ControlPort))
	p, err := plane.New(po, log)
	if err != nil {
		u.removeNetwork()
		return nil, err
	}
	u.plane = p
	return u, nil
}

// Status describes the control plane.
func (u *Up) Status() localapi.Status { return u.plane.Status() }

// Run serves until ctx ends, then stops and removes the network.
func (u *Up) Run(ctx context.Context) error {
	defer u.removeNetwork()
	return u.plane.Run(ctx)
}

func (u *Up) removeNetwork() {
	if u.bridge == "" {
		return
	}
	live, err := netns.ReleaseBridge(context.Background(), u.bridge)
	if err != nil {
		u.log.Warn("removing the network", "bridge", u.bridge, "error", err)
	}
	if live > 0 {
		u.log.Info("kept the bridge for the instances still running: they serve from what they know, and the next 'trellis up' adopts them", "bridge", u.bridge, "instances", live)
	}
}
