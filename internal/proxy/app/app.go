// Package app runs a whole proxy from its Config: it binds the listeners,
// builds the inbound and outbound stacks, serves the admin endpoints and
// drains gracefully on shutdown.
package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
	"github.com/trellis-mesh/trellis/internal/proxy/admin"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/egress"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/inbound"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/observe"
	"github.com/trellis-mesh/trellis/internal/proxy/outbound"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/trace"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Proxy is a running proxy.
type Proxy struct {
	cfg       *config.Config
	log       *slog.Logger
	reg       *metrics.Registry
	srv       *transport.Server
	ready     atomic.Bool
	shutdownC chan struct{}
	once      sync.Once

	// Addresses the listeners are bound to (useful when configured with
	// port 0); TapAddr is nil unless the proxy registers a workload.
	InboundAddr, OutboundAddr, AdminAddr, TapAddr net.Addr
	UpstreamAddrs                                 map[string]net.Addr

	listeners []boundListener
	adminLn   net.Listener
	closers   []interface{ CloseIdle() }
	identity  *identity.Manager // nil without an identity
	control   *control          // nil without a destination service
	decisions *explain.Journal
	// authorizer decides who may reach the application (inbound); egress
	// what may leave the mesh (nil without a control plane).
	authorizer *authz.Authorizer
	egress     *egress.Guard
	tapHub     *tap.Hub // nil unless the proxy registers a workload
	tapSrv     *tap.Server
	tapLn      net.Listener
	tracer     *trace.Tracer     // nil without a trace collector
	accessLog  *accesslog.Logger // nil without an access log
}

type boundListener struct {
	ln  net.Listener
	dir transport.Direction
	h   transport.Handler
}

// New binds every listener; an address that cannot be bound is an error
// naming the setting.
func New(cfg *config.Config, log *slog.Logger) (*Proxy, error) {
	p := &Proxy{cfg: cfg, log: log, reg: metrics.NewRegistry(), srv: transport.NewServer(log), shutdownC: make(chan struct{}), UpstreamAddrs: map[string]net.Addr{},
		decisions: &explain.Journal{}}
	p.reg.RegisterProcess()
	refusals := newRefusals(p.reg, log)
	p.srv.Limits, p.srv.OnRefused = connectionLimits(cfg), refusals.refused
	dialer := &transport.Dialer{Timeout: cfg.ConnectTimeout, Registry: p.reg}
	var creds mesh.Credentials
	if cfg.Identity != "" {
		m, err := newIdentity(cfg, log)
		if err != nil {
			return nil, err
		}
		m.RegisterMetrics(p.reg)
		p.identity, creds = m, m
		// Tap is the control plane's, which finds the port by the
		// workload's registration, or, in Kubernetes, the Pod (the
		// injector gives --tap-addr): otherwise a proxy has none.
		if cfg.DestinationAddr != "" && (cfg.Workload != "" || cfg.ServeTap) {
			p.tapHub = tap.NewHub(tap.HubConfig{Identity: cfg.Identity, Decisions: p.decisions})
			if p.tapSrv, err = tap.NewServer(p.tapHub, m, meshid.IdentityServiceID(m.ID().TrustDomain), log); err != nil {
				return nil, err
			}
		}
	}
	var res *discover.Resolver
	if cfg.DestinationAddr != "" {
		c, err := newControl(cfg, p.identity, log)
		if err != nil {
			return nil, err
		}
		p.control, res = c, c.resolver
	}
	if err := p.newObservers(cfg, log); err != nil {
		if p.control != nil {
			p.control.close()
		}
		return nil, err
	}
	obs := observe.Stages{Tap: p.tapHub, Tracer: p.tracer, AccessLog: p.accessLog}
	if !cfg.DisableHTTPMetrics {
		obs.HTTPMetrics = p.reg
	}
	p.authorizer = authz.New(cfg.Authz, p.reg, &p.decisions.Inbound, log)
	in, inFwd := inbound.Stack(cfg, p.reg, dialer, creds, obs, p.authorizer, log)
	if p.control != nil {
		p.egress = egress.New(p.identity.ID().Namespace, p.reg, log)
	}
	out := outbound.New(cfg, p.reg, dialer, creds, res, p.egress, &p.decisions.Outbound, obs, log)
	p.closers = append(p.closers, inFwd, out)

	bind := func(setting, addr string, dir transport.Direction, h transport.Handler) (net.Addr, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", setting, addr, err)
		}
		p.listeners = append(p.listeners, boundListener{ln, dir, h})
		return ln.Addr(), nil
	}
	var err error
	defer func() {
		if err != nil {
			p.closeListeners()
			if p.control != nil {
				p.control.close()
			}
			p.closeObservers()
		}
	}()
	if p.InboundAddr, err = bind("inbound-addr", cfg.InboundAddr, transport.Inbound, in); err != nil {
		return nil, err
	}
	if p.OutboundAddr, err = bind("outbound-addr", cfg.OutboundAddr, transport.Outbound, out.Main()); err != nil {
		return nil, err
	}
	for _, u := range cfg.Upstreams {
		var a net.Addr
		if a, err = bind("upstream "+u.Name, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(u.LocalPort))), transport.Outbound, out.Upstream(u)); err != nil {
			return nil, err
		}
		p.UpstreamAddrs[u.Name] = a
	}
	if p.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		err = fmt.Errorf("admin-addr %s: %w", cfg.AdminAddr, err)
		return nil, err
	}
	p.AdminAddr = p.adminLn.Addr()
	p.adminLn = limitListener(p.adminLn, adminListener, refusals)
	if p.tapSrv != nil {
		if p.tapLn, err = net.Listen("tcp", cfg.TapAddr); err != nil {
			err = fmt.Errorf("tap-addr %s: %w", cfg.TapAddr, err)
			return nil, err
		}
		p.TapAddr = p.tapLn.Addr()
		p.tapLn = limitListener(p.tapLn, tapListener, refusals)
	}
	return p, nil
}

func (p *Proxy) closeListeners() {
	for _, l := range p.listeners {
		l.ln.Close()
	}
	if p.adminLn != nil {
		p.adminLn.Close()
	}
	if p.tapLn != nil {
		p.tapLn.Close()
	}
}

// Registry is the proxy's metrics registry.
func (p *Proxy) Registry() *metrics.Registry { return p.reg }

// NotReady says why the proxy cannot serve traffic — not serving yet or
// any more (draining), or no certificate yet if it has an identity — or
// is "".
func (p *Proxy) NotReady() string {
	if !p.ready.Load() {
		return "not serving (starting, or draining)"
	}
	if p.identity != nil {
		select {
		case <-p.identity.Ready():
		default:
			return "no certificate yet from the identity service"
		}
	}
	return ""
}

// newIdentity builds the certificate manager from the identity settings.
func newIdentity(cfg *config.Config, log *slog.Logger) (*identity.Manager, error) {
	id, err := meshid.Parse(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("identity %q: %w", cfg.Identity, err)
	}
	pem, source := []byte(cfg.TrustAnchorsPEM), "trust-anchors-pem"
	if cfg.TrustAnchorsFile != "" {
		if pem, err = os.ReadFile(cfg.TrustAnchorsFile); err != nil {
			return nil, fmt.Errorf("trust-anchors: %w", err)
		}
		source = "trust-anchors " + cfg.TrustAnchorsFile
	}
	anchors := x509.NewCertPool()
	if !anchors.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates in it", source)
	}
	return identity.New(identity.Config{
		ID: id, TrustAnchors: anchors, Token: identity.TokenFile(cfg.IdentityTokenFile), Addr: cfg.IdentityAddr, Log: log,
	})
}

// newObservers starts the tracer and the access log, if configured.
func (p *Proxy) newObservers(cfg *config.Config, log *slog.Logger) error {
	if cfg.TraceCollector != "" {
		t, err := trace.New(trace.Config{
			Collector: cfg.TraceCollector, SampleRatio: cfg.TraceSampleRatio, ServiceName: cfg.TraceServiceName,
			Identity: cfg.Identity, Workload: cfg.Workload, Log: log,
		})
		if err != nil {
			return err
		}
		p.tracer = t
		log.Info("tracing", "collector", cfg.TraceCollector, "sample_ratio", cfg.TraceSampleRatio, "service_name", cfg.TraceServiceName)
	}
	if cfg.AccessLog != "" {
		l, err := accesslog.New(accesslog.Options{Format: cfg.AccessLog, Out: cfg.AccessLogOutput})
		if err != nil {
			p.closeObservers()
			return err
		}
		l.RegisterMetrics(p.reg)
		p.accessLog = l
	}
	return nil
}

// closeObservers exports the spans and writes the access log lines still
// buffered.
func (p *Proxy) closeObservers() {
	if p.tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.tracer.Shutdown(ctx); err != nil {
			p.log.Warn("exporting the last spans", "error", err)
		}
	}
	if p.accessLog != nil {
		if err := p.accessLog.Close(); err != nil {
			p.log.Warn("writing the access log", "error", err)
		}
	}
}

// Shutdown asks the proxy to drain and stop (as SIGTERM does).
func (p *Proxy) Shutdown() { p.once.Do(func() { close(p.shutdownC) }) }

// Run serves until ctx is done or Shutdown is called, then drains: the
// listeners close (new connections are refused), in-flight requests and
// streams get up to the grace period to finish, idle connections close.
func (p *Proxy) Run(ctx context.Context) error {
	hard, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()
	// Idle keep-alive connections (a scraper's, a prober's) close after a
	// minute: a client cannot hold them open by saying nothing.
	adminSrv := &http.Server{Handler: admin.Handler(p.reg, p, p.decisions, p.cfg.TCPProbePorts),
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	serveErr := make(chan error, len(p.listeners)+2)
	go func() {
		if err := adminSrv.Serve(p.adminLn); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("admin server: %w", err)
		}
	}()
	for _, l := range p.listeners {
		go func() {
			if err := p.srv.Serve(hard, l.ln, l.dir, l.h); err != nil {
				serveErr <- fmt.Errorf("%s listener %s: %w", l.dir, l.ln.Addr(), err)
			}
		}()
	}
	if p.tapSrv != nil {
		go p.tapSrv.Serve(p.tapLn)
		defer p.tapSrv.Stop()
	}
	if p.identity != nil {
		go func() {
			if err := p.identity.Run(hard); err != nil {
				serveErr <- err
			}
		}()
	}
	registered := make(chan struct{})
	regCtx, deregister := context.WithCancel(context.WithoutCancel(ctx))
	defer deregister()
	if p.control != nil {
		defer p.control.close()
	}
	// The policy watches start once the proxy has its certificate, and end
	// before the connection to the control plane closes (defers run last
	// first).
	watchCtx, stopWatches := context.WithCancel(hard)
	defer stopWatches()
	watch := func(f func(context.Context)) {
		go func() {
			select {
			case <-p.identity.Ready():
				f(watchCtx)
			case <-watchCtx.Done():
			}
		}()
	}
	if p.control != nil && p.cfg.Workload != "" {
		r := p.control.registrar(p.cfg, p.identity, p.InboundAddr, p.AdminAddr, p.TapAddr, p.log)
		go func() { r.Run(regCtx); close(registered) }()
		client := policyv1.NewInboundPoliciesClient(p.control.conn)
		watch(func(ctx context.Context) { p.authorizer.Watch(ctx, client, p.cfg.Workload) })
	} else {
		close(registered)
	}
	if p.egress != nil {
		client := policyv1.NewEgressPoliciesClient(p.control.conn)
		watch(func(ctx context.Context) { p.egress.Watch(ctx, client) })
	}
	if p.cfg.ReadyFile != "" {
		if err := p.writeReadyFile(); err != nil {
			return err
		}
	}
	p.ready.Store(true)
	p.log.Info("proxy ready", "inbound", p.InboundAddr.String(), "outbound", p.OutboundAddr.String(), "admin", p.AdminAddr.String(), "upstreams", len(p.UpstreamAddrs))

	var runErr error
	select {
	case <-ctx.Done():
	case <-p.shutdownC:
	case runErr = <-serveErr:
	}
	p.ready.Store(false)
	deregister() // peers stop choosing this instance before it stops accepting
	<-registered
	p.log.Info("draining", "grace_period", p.cfg.ShutdownGracePeriod.String())
	p.srv.Drain()
	for _, c := range p.closers {
		c.CloseIdle()
	}
	grace, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGracePeriod)
	defer cancel()
	if !p.srv.Wait(grace) {
		p.log.Warn("grace period over; closing remaining connections")
		stopAll()
		wait, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.srv.Wait(wait)
	}
	adminSrv.Close()
	p.closeObservers()
	p.log.Info("proxy stopped")
	return runErr
}

// writeReadyFile writes the addresses the proxy listens on to
// cfg.ReadyFile, whole (a temporary file renamed into place).
func (p *Proxy) writeReadyFile() error {
	addrs := struct {
		Inbound, Outbound, Admin, Tap string
		Upstreams                     map[string]string
	}{Inbound: p.InboundAddr.String(), Outbound: p.OutboundAddr.String(), Admin: p.AdminAddr.String(), Upstreams: map[string]string{}}
	if p.TapAddr != nil {
		addrs.Tap = p.TapAddr.String()
	}
	for name, a := range p.UpstreamAddrs {
		addrs.Upstreams[name] = a.String()
	}
	b, _ := json.Marshal(addrs)
	tmp := p.cfg.ReadyFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("ready-file: %w", err)
	}
	if err := os.Rename(tmp, p.cfg.ReadyFile); err != nil {
		return fmt.Errorf("ready-file: %w", err)
	}
	return nil
}
