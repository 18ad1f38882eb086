// Package register keeps the proxy's workload registered with the control
// plane: once the application accepts connections it registers the
// workload, renews the lease at a third of its TTL, registers again if the
// control plane lost it, and deregisters on shutdown so peers stop sending
// at once rather than when the lease lapses.
package register

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

const (
	backoffMin  = 200 * time.Millisecond
	backoffMax  = 5 * time.Second
	callTimeout = 2 * time.Second
	// registerTimeout bounds a registration, which no lease hangs on:
	// long enough for several connection attempts on a busy host.
	registerTimeout = 10 * time.Second
	// appWaitWarn is when waiting for the application is first warned of
	// (then after 4×, 16×, … as long).
	appWaitWarn = 5 * time.Second
)

// Config configures a Registrar.
type Config struct {
	Client  destinationv1.RegistryClient
	Request *destinationv1.RegisterRequest
	// AppAddr is probed with TCP connections before registering: nobody
	// is sent traffic before the application listens.
	AppAddr string
	// Ready, if set, is waited for first (the proxy's certificate).
	Ready <-chan struct{}
	Log   *slog.Logger
}

// Registrar holds one workload's registration.
type Registrar struct {
	cfg        Config
	registered chan struct{}
}

// New returns a registrar; Run does the work.
func New(cfg Config) *Registrar { return &Registrar{cfg: cfg, registered: make(chan struct{})} }

// Registered is closed once the first registration succeeded.
func (r *Registrar) Registered() <-chan struct{} { return r.registered }

// Run registers and renews until ctx ends, then deregisters (bounded by a
// short timeout) and returns.
func (r *Registrar) Run(ctx context.Context) {
	if !r.waitReady(ctx) {
		return
	}
	name := r.cfg.Request.GetName()
	failures := 0
	var ttl time.Duration // zero: not registered
	first := true
	for {
		var err error
		var lease *destinationv1.Lease
		timeout := callTimeout
		if ttl == 0 {
			timeout = registerTimeout
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		if ttl == 0 {
			lease, err = r.cfg.Client.Register(cctx, r.cfg.Request)
		} else {
			lease, err = r.cfg.Client.Renew(cctx, &destinationv1.RenewRequest{Name: name})
			if status.Code(err) == codes.NotFound {
				r.cfg.Log.Info("the control plane lost this workload's lease; registering again", "workload", name)
				lease, err = r.cfg.Client.Register(cctx, r.cfg.Request)
			}
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		var wait time.Duration
		if err != nil {
			failures++
			d := min(backoffMin<<min(failures-1, 5), backoffMax)
			wait = d/2 + rand.N(d/2+1)
			lvl := slog.LevelDebug
			if failures == 1 || failures%10 == 0 {
				lvl = slog.LevelWarn
			}
			r.cfg.Log.Log(ctx, lvl, "workload registration failed; retrying", "workload", name, "error", err, "retry_in", wait.String(), "failures", failures)
			if c := status.Code(err); c == codes.InvalidArgument || c == codes.PermissionDenied {
				wait = backoffMax
			}
			if ttl > 0 {
				wait = min(wait, ttl/3) // retry within the lease
			}
		} else {
			failures = 0
			ttl = lease.GetTtl().AsDuration()
			if ttl <= 0 {
				ttl = 3 * time.Second
			}
			wait = ttl / 3
			if first {
				first = false
				r.cfg.Log.Info("workload registered", "workload", lease.GetWorkload(), "ttl", ttl.String())
				close(r.registered)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			continue
		}
		break
	}
	// A first registration cut short may still have reached the control
	// plane: deregister anyway.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if _, err := r.cfg.Client.Deregister(dctx, &destinationv1.DeregisterRequest{Name: name}); err != nil {
		if !first {
			r.cfg.Log.Warn("deregistering failed; the lease will lapse", "workload", name, "error", err)
		}
		return
	}
	r.cfg.Log.Info("workload deregistered", "workload", name)
}

// waitReady waits for the certificate and for the application to accept
// a TCP connection.
func (r *Registrar) waitReady(ctx context.Context) bool {
	if r.cfg.Ready != nil {
		select {
		case <-r.cfg.Ready:
		case <-ctx.Done():
			return false
		}
	}
	if r.cfg.AppAddr == "" {
		return true
	}
	// The wait is told at once, and warned of while it lasts: an
	// application that never listens is never sent traffic.
	start, warnAt := time.Now(), appWaitWarn
	for first := true; ; first = false {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", r.cfg.AppAddr)
		if err == nil {
			c.Close()
			return true
		}
		if first {
			r.cfg.Log.Info("waiting for the application to listen before registering", "app", r.cfg.AppAddr)
		} else if waited := time.Since(start); waited >= warnAt {
			r.cfg.Log.Warn("the application still does not accept connections: the workload is not registered until it does", "app", r.cfg.AppAddr,
				"waited", waited.Round(time.Second).String(), "error", err)
			warnAt *= 4
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
