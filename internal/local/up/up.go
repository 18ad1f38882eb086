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
	"strconv"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/plane"
	"github.com/trellis-mesh/trellis/internal/local/netns"
)

// Defaults of the bridge network.
const (
	DefaultBridge = "trellis0"
	// DefaultControlPort is the gRPC port of identity and destination.
	DefaultControlPort = 8086
)

// DefaultNetwork is the bridge network; its first address is the bridge's.
var DefaultNetwork = netip.MustParsePrefix("10.239.0.0/16")

// Options configure a local control plane.
type Options struct {
	Plane plane.Options
	// Network is "auto" (a bridge when root), "bridge" or "none".
	Network     string
	ControlPort int
	Bridge      string
	Prefix      netip.Prefix
}

// DataDir is the default data directory: $TRELLIS_DATA_DIR, else
// /var/lib/trellis for root (proxies dropping privileges must reach their
// files), else ~/.trellis.
func DataDir() string {
	if d := os.Getenv("TRELLIS_DATA_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/trellis"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".trellis"
	}
	return filepath.Join(home, ".trellis")
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
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if !o.Prefix.IsValid() {
		o.Prefix = DefaultNetwork
	}
	po := o.Plane
	host := "127.0.0.1"
	u := &Up{log: log}
	if bridged {
		gw := netip.PrefixFrom(o.Prefix.Masked().Addr().Next(), o.Prefix.Bits())
		dataDir, err := filepath.Abs(po.Identity.DataDir)
		if err != nil {
			return nil, err
		}
		adopted, err := netns.EnsureBridge(ctx, o.Bridge, gw, dataDir)
		if err != nil {
			return nil, err
		}
		if adopted {
			log.Info("adopted the bridge and the instances still running on it", "bridge", o.Bridge, "instances", len(netns.Attached(o.Bridge)))
		}
		u.bridge = o.Bridge
		host = gw.Addr().String()
		po.DNSAddr = net.JoinHostPort(host, "53")
		po.Network, po.Bridge = o.Prefix, o.Bridge
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
