// Package tap is the control plane's side of live request tapping: it
// opens one Observe stream (trellis.tap.v1.Tap) to the tap port of each
// proxy to watch — mutual TLS with the control plane's own certificate,
// each proxy's SPIFFE ID checked — and merges their events into one stream
// of JSON-friendly Events. A proxy that cannot be reached, or whose stream
// breaks, is reported as an error event; the others go on. Handler serves
// the merged stream as NDJSON, one event per line, flushed as it comes.
package tap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultConnectTimeout bounds connecting to one proxy.
const DefaultConnectTimeout = 5 * time.Second

// Target is one proxy to tap.
type Target struct {
	// Addr is the host:port of the proxy's tap port.
	Addr string
	// Workload (the instance's name, web-0) and Namespace say whose proxy
	// it is; they label its events.
	Workload  string
	Namespace string
	// Identity is the proxy's SPIFFE ID: its certificate must name it.
	Identity string
}

// Client taps proxies as the control plane.
type Client struct {
	// GetClientCertificate returns the control plane's certificate, the
	// identity proxies admit to their tap port.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Roots are the trust anchors the proxies' certificates chain to.
	Roots *x509.CertPool
	// ConnectTimeout bounds connecting to one proxy; DefaultConnectTimeout
	// if zero.
	ConnectTimeout time.Duration
}

// Observe opens a stream to every target and merges their events into the
// returned channel, which is closed when ctx ends or every stream has
// ended. A target that fails — unreachable, refusing, not the identity
// expected, or its stream breaking — yields one event of TypeError and no
// more; the others are not affected.
func (c *Client) Observe(ctx context.Context, targets []Target, req *tapv1.ObserveRequest) <-chan Event {
	out := make(chan Event, 64)
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx, t, req, out)
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// watch streams one target's events to out until ctx ends or the stream
// does.
func (c *Client) watch(ctx context.Context, t Target, req *tapv1.ObserveRequest, out chan<- Event) {
	fail := func(err error) {
		if ctx.Err() == nil {
			send(ctx, out, Event{Type: TypeError, Time: time.Now(), ProxyAddr: t.Addr, Workload: t.Workload, Namespace: t.Namespace,
				Error: fmt.Sprintf("tap %s (%s): %v", t.Addr, t.Identity, err)})
		}
	}
	id, err := identity.Parse(t.Identity)
	if err != nil {
		fail(err)
		return
	}
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	cc, err := grpc.NewClient(t.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(id))),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: timeout}),
		// A proxy that vanishes without a reset (its namespace torn down)
		// ends its stream within 40 s instead of never.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		fail(err)
		return
	}
	defer cc.Close()
	stream, err := tapv1.NewTapClient(cc).Observe(ctx, req)
	if err != nil {
		fail(describe(err))
		return
	}
	conv := newConverter(t)
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			fail(errors.New("the proxy ended the stream"))
			return
		}
		if err != nil {
			fail(describe(err))
			return
		}
		if !send(ctx, out, conv.event(ev, time.Now())) {
			return
		}
	}
}

// describe turns a gRPC error into its code and message.
func describe(err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", s.Code(), s.Message())
	}
	return err
}

func send(ctx context.Context, out chan<- Event, e Event) bool {
	select {
	case out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// tlsConfig is the configuration for connecting to the proxy that must be
// want: TLS 1.3, the control plane's certificate, and the proxy's chain
// and SPIFFE ID checked (crypto/tls does not check URI SANs, so
// VerifyConnection does it all).
func (c *Client) tlsConfig(want identity.ID) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: c.GetClientCertificate,
		InsecureSkipVerify:   true, // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyProxy(c.Roots, want, cs.PeerCertificates, time.Now())
		},
	}
}

// verifyProxy checks that chain (leaf first) chains to roots at now, may
// authenticate a server, and names want.
func verifyProxy(roots *x509.CertPool, want identity.ID, chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the proxy presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("proxy certificate refused: %w", err)
	}
	got, err := identity.FromCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("proxy certificate refused: %w", err)
	}
	if got != want {
		return fmt.Errorf("proxy certificate refused: it is for %s, not %s", got, want)
	}
	return nil
}
