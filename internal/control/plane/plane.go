// Package plane runs every control-plane component in one process — what
// `trellis-control all` and `trellis up` start: the identity service, the
// destination service and workload registry on the same gRPC/TLS port, the
// embedded store behind them, the DNS server for service names, and the
// local API the trellis CLI talks to.
package plane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/destination"
	"github.com/trellis-mesh/trellis/internal/control/dns"
	"github.com/trellis-mesh/trellis/internal/control/identity"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi/embedded"
	"github.com/trellis-mesh/trellis/internal/control/policy"
	"github.com/trellis-mesh/trellis/internal/control/registry"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/control/web"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// StoreFile is the embedded database's file name in the data directory.
const StoreFile = "store.db"

// Metrics files in the data directory: the embedded TSDB, and the file_sd
// file listing every proxy for a Prometheus server.
const (
	MetricsDir      = "metrics"
	TargetsFileName = "prometheus-targets.json"
)

// Options configure the whole control plane.
type Options struct {
	// Identity configures the certificate authority; its Addr is the gRPC
	// port of every component, its DataDir the state of all of them.
	Identity identity.Options
	// ClusterDomain is the DNS domain of services (name.ns.svc.<domain>).
	ClusterDomain string
	// DNSAddr, if set, serves service names there (UDP and TCP).
	DNSAddr string
	// LeaseTTL is how long a workload stays registered without renewal.
	LeaseTTL time.Duration
	// Network, if valid, is the bridge network whose addresses instances
	// get; Bridge names its interface (status only).
	Network netip.Prefix
	Bridge  string
	// Metrics configures the metrics API's store.
	Metrics MetricsOptions
	// Sources run beside the components and write what they learn into
	// the store (in Kubernetes: the cluster's Services and endpoints).
	Sources []func(ctx context.Context, st store.Store) error
	// NoRegistry leaves the registration API out: the workloads come from
	// the Sources alone (in Kubernetes a proxy cannot add itself to a
	// Service; the EndpointSlices say who serves it).
	NoRegistry bool
	// DefaultInboundPolicy, if set, is the mesh's default inbound policy,
	// which `trellis run` gives its proxies unless told otherwise (status
	// only: the proxies enforce it).
	DefaultInboundPolicy string
	// NamespaceInboundPolicies, if set, are namespaces' default inbound
	// policies, before the mesh's (status only, as DefaultInboundPolicy).
	NamespaceInboundPolicies map[string]string
	// ViewAddr, if set, serves the API's read-only part (status,
	// resources, metrics, tap) over TCP: in Kubernetes, on the Pod's
	// loopback, for the CLI's port-forward.
	ViewAddr string
	// Web, if its Addr is set, serves the dashboard.
	Web web.Options
}

// MetricsOptions choose and tune the metrics store.
type MetricsOptions struct {
	// PrometheusURL, if set, is an external Prometheus server to query;
	// otherwise the embedded store scrapes the proxies itself.
	PrometheusURL  string
	ScrapeInterval time.Duration
	Retention      time.Duration
}

// Flags binds the options to fs.
func (o *Options) Flags(fs *pflag.FlagSet) {
	o.Identity.Flags(fs)
	fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of services: NAME.NAMESPACE.svc.DOMAIN")
	fs.StringVar(&o.DNSAddr, "dns-addr", "", "address serving service names over DNS (UDP and TCP); empty: no DNS")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", registry.DefaultTTL, "how long a workload stays registered without its proxy renewing the lease")
	fs.StringVar(&o.Metrics.PrometheusURL, "prometheus-url", "", "query this Prometheus server (scraping the targets file, see `trellis prometheus-config`) instead of the embedded metrics store")
	fs.DurationVar(&o.Metrics.ScrapeInterval, "metrics-scrape-interval", embedded.DefaultScrapeInterval, "how often the embedded store scrapes every proxy (and the targets file is refreshed)")
	fs.DurationVar(&o.Metrics.Retention, "metrics-retention", embedded.DefaultRetention, "how long the embedded store keeps samples")
	o.Web.Flags(fs, "")
	fs.StringVar(&o.ViewAddr, "view-addr", "", "address serving the API's read-only part (status, resources, metrics, tap) over plain HTTP; keep it on loopback (in Kubernetes the CLI port-forwards to it)")
}

// Plane is a control plane ready to run: state loaded, every port bound.
type Plane struct {
	opts     Options
	log      *slog.Logger
	identity *identity.Server
	store    *store.DB
	index    *destination.Index
	registry *registry.Registry
	policy   *policy.Server
	dns      *dns.Server
	api      *localapi.Server
	view     net.Listener // --view-addr, or nil
	web      *web.Server  // --web-addr, or nil
	metrics  metricsapi.Backend
	embedded *embedded.Store // nil with an external Prometheus
	started  time.Time
	stop     context.CancelFunc
	stopped  chan struct{}
}

// New loads (or creates) the state in the data directory and binds every
// listener; an error names what is wrong.
func New(o Options, log *slog.Logger) (*Plane, error) {
	if o.Identity.DataDir == "" {
		return nil, errors.New("--data-dir is required: it keeps the store, the certificates and the API socket")
	}
	if o.LeaseTTL < 100*time.Millisecond {
		return nil, fmt.Errorf("--lease-ttl %v: must be at least 100ms", o.LeaseTTL)
	}
	if err := os.MkdirAll(o.Identity.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	p := &Plane{opts: o, log: log, started: time.Now(), stopped: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			if p.identity != nil {
				p.identity.Close()
			}
			p.close()
		}
	}()
	var err error
	if p.store, err = store.Open(filepath.Join(o.Identity.DataDir, StoreFile), store.Options{Kinds: resources.Kinds{}}); err != nil {
		return nil, err
	}
	if p.identity, err = identity.NewServer(o.Identity, log.With("component", "identity")); err != nil {
		return nil, err
	}
	ips := &registry.ClusterIPs{Store: p.store, CIDR: registry.DefaultServiceCIDR}
	p.registry = registry.New(registry.Config{Store: p.store, TrustDomain: o.Identity.TrustDomain, TTL: o.LeaseTTL,
		RestartGrace: registry.DefaultRestartGrace, IPs: ips, Log: log.With("component", "registry"), Metrics: p.identity.Metrics()})
	if err := p.registry.Load(context.Background()); err != nil {
		return nil, err
	}
	p.index = destination.NewIndex(p.store, o.ClusterDomain, destination.DefaultQueue, log.With("component", "destination"))
	destination.NewServer(p.index).Register(p.identity.GRPC())
	p.policy = policy.NewServer(p.store, o.Identity.TrustDomain, p.registry.Caller, log.With("component", "policy"))
	p.policy.Register(p.identity.GRPC())
	if !o.NoRegistry {
		p.registry.AddTo(p.identity.GRPC())
	}
	if o.DNSAddr != "" {
		if p.dns, err = dns.Listen(o.DNSAddr, dns.Config{Domain: o.ClusterDomain, Resolver: p.index, Log: log.With("component", "dns")}); err != nil {
			return nil, fmt.Errorf("--dns-addr: %w", err)
		}
	}
	if err := p.openMetrics(); err != nil {
		return nil, err
	}
	metricsAPI := (&metricsapi.API{Backend: p.metrics, Store: p.store, ScrapeInterval: o.Metrics.ScrapeInterval}).Handler()
	var addrs *localapi.Addresses
	if o.Network.IsValid() {
		addrs = localapi.NewAddresses(o.Network)
		p.reserveAddresses(addrs)
	}
	if p.api, err = localapi.Listen(filepath.Join(o.Identity.DataDir, localapi.SocketName), localapi.Config{
		Store: p.store, IPs: ips, TokenKey: p.identity.JoinTokenKey(), TrustDomain: o.Identity.TrustDomain,
		Kinds: resources.Kinds{}, Addresses: addrs, Status: p.Status, Shutdown: p.Shutdown, Log: log.With("component", "api"),
		Mount: map[string]http.Handler{"GET /v1/stat": metricsAPI, "GET /v1/series": metricsAPI, "GET /v1/routes": metricsAPI, "GET /v1/edges": metricsAPI, "GET /v1/authz": metricsAPI, "GET /v1/certificates": metricsAPI,
			"GET /v1/proxy-metrics/{namespace}/{name}": metricsAPI, "GET /v1/tap": p.tapHandler(), "GET /v1/explain": p.explainHandler()},
	}); err != nil {
		return nil, err
	}
	if err := p.listenView(); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// openMetrics opens the metrics store: the embedded TSDB in the data
// directory, or the external Prometheus server.
func (p *Plane) openMetrics() error {
	o := p.opts.Metrics
	if o.ScrapeInterval < time.Second {
		return fmt.Errorf("--metrics-scrape-interval %v: must be at least 1s", o.ScrapeInterval)
	}
	if o.PrometheusURL != "" {
		ext, err := metricsapi.NewExternal(o.PrometheusURL)
		if err != nil {
			return err
		}
		p.metrics = ext
		return nil
	}
	e, err := embedded.Open(embedded.Options{
		Dir: filepath.Join(p.opts.Identity.DataDir, MetricsDir), Retention: o.Retention, Interval: o.ScrapeInterval,
		Targets: func(ctx context.Context) ([]metricsapi.Target, error) { return metricsapi.Targets(ctx, p.store) },
		Log:     p.log.With("component", "metrics"),
	})
	if err != nil {
		return err
	}
	p.metrics, p.embedded = e, e
	return nil
}

// TargetsFile is the file_sd file of every proxy, in the data directory.
func (p *Plane) TargetsFile() string { return filepath.Join(p.opts.Identity.DataDir, TargetsFileName) }

// keepTargetsFile rewrites the targets file whenever the proxies change,
// checking once per scrape interval.
func (p *Plane) keepTargetsFile(ctx context.Context) error {
	t := time.NewTicker(p.opts.Metrics.ScrapeInterval)
	defer t.Stop()
	var last []metricsapi.Target
	written := false
	for {
		targets, err := metricsapi.Targets(ctx, p.store)
		if err == nil && (!written || !slices.EqualFunc(targets, last, func(a, b metricsapi.Target) bool {
			return a.Addr == b.Addr && maps.Equal(a.Labels, b.Labels)
		})) {
			if err = metricsapi.WriteFileSD(p.TargetsFile(), targets); err == nil {
				last, written = targets, true
			}
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("metrics: updating the targets file", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// reserveAddresses keeps the addresses of registered workloads taken.
func (p *Plane) reserveAddresses(a *localapi.Addresses) {
	wls, _, err := p.store.List(context.Background(), resources.KindWorkload, "", nil)
	if err != nil {
		return
	}
	for _, w := range wls {
		var spec resources.WorkloadSpec
		if resources.Decode(w.Spec, &spec) == nil {
			if ip, err := netip.ParseAddr(spec.Address); err == nil && a.Prefix.Contains(ip) {
				a.Reserve(w.Metadata.Namespace+"/"+w.Metadata.Name, ip)
			}
		}
	}
}

// Status describes the running control plane.
func (p *Plane) Status() localapi.Status {
	s := localapi.Status{
		Version: buildinfo.String(), PID: os.Getpid(), DataDir: p.opts.Identity.DataDir,
		ControlAddr: p.identity.Addr().String(), AdminAddr: p.identity.AdminAddr().String(),
		TrustDomain: p.opts.Identity.TrustDomain, ClusterDomain: p.opts.ClusterDomain, TrustAnchor: filepath.Join(p.opts.Identity.DataDir, pki.AnchorFile),
		Bridge: p.opts.Bridge, Started: p.started, DefaultInboundPolicy: p.opts.DefaultInboundPolicy,
		NamespaceInboundPolicies: p.opts.NamespaceInboundPolicies,
		Metrics:                  "embedded", TargetsFile: p.TargetsFile(), ScrapeInterval: p.opts.Metrics.ScrapeInterval.String(),
	}
	if p.opts.Metrics.PrometheusURL != "" {
		s.Metrics = p.opts.Metrics.PrometheusURL
	}
	if p.web != nil {
		s.DashboardURL = p.web.URL()
	}
	if p.opts.Identity.TrustAnchorPEM != "" {
		s.TrustAnchor = p.opts.Identity.TrustAnchorPEM
	}
	if p.dns != nil {
		s.DNSAddr = p.dns.Addr().String()
	}
	if p.opts.Network.IsValid() {
		s.Network = p.opts.Network.String()
		s.Gateway = p.opts.Network.Masked().Addr().Next().String()
	}
	return s
}

// Shutdown asks Run to stop.
func (p *Plane) Shutdown() {
	if p.stop != nil {
		p.stop()
	}
}

// Run serves until ctx ends or Shutdown is called, then stops every
// component gracefully.
func (p *Plane) Run(ctx context.Context) error {
	ctx, p.stop = context.WithCancel(ctx)
	defer p.stop()
	defer p.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.index.Run(gctx) })
	g.Go(func() error { return p.registry.Run(gctx) })
	g.Go(func() error { return p.identity.Run(gctx) })
	g.Go(func() error { <-gctx.Done(); p.policy.Close(); return nil }) // its streams end, so the graceful stop does not wait for them
	g.Go(func() error { return p.api.Serve(gctx) })
	g.Go(func() error { return p.keepTargetsFile(gctx) })
	if p.embedded != nil {
		g.Go(func() error { return p.embedded.Run(gctx) })
	}
	if p.dns != nil {
		g.Go(func() error { return p.dns.Serve(gctx) })
	}
	if p.view != nil {
		g.Go(func() error { return p.serveView(gctx) })
	}
	if p.web != nil {
		g.Go(func() error { return p.web.Serve(gctx) })
	}
	for _, src := range p.opts.Sources {
		g.Go(func() error { return src(gctx, p.store) })
	}
	p.log.Info("control plane serving", "control", p.identity.Addr().String(), "admin", p.identity.AdminAddr().String(),
		"data_dir", p.opts.Identity.DataDir)
	return g.Wait()
}

func (p *Plane) close() {
	if p.embedded != nil && p.stop == nil { // never ran: Run closes it
		p.embedded.Close()
	}
	if p.dns != nil {
		p.dns.Close()
	}
	if p.view != nil {
		p.view.Close()
	}
	if p.web != nil {
		p.web.Close()
	}
	if p.store != nil {
		p.store.Close()
	}
}
