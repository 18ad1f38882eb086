package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// stopTimeout bounds how long a graceful stop may wait for requests in
// flight before the server closes their connections.
const stopTimeout = 5 * time.Second

// orDiscard returns log, or a logger that drops everything when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// serveGRPC serves srv on lis until ctx is cancelled, then stops it
// gracefully. It returns nil after a graceful stop and the serving error if
// the server fails first.
func serveGRPC(ctx context.Context, lis net.Listener, srv *grpc.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		srv.Stop()
		return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	stopGRPC(srv)
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
	}
	return nil
}

// stopGRPC lets the RPCs in flight finish, for up to stopTimeout, then
// closes whatever is left.
func stopGRPC(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		srv.Stop()
		<-done
	}
}

// serveHTTP serves srv on lis until ctx is cancelled, then shuts it down
// gracefully. It returns nil after a graceful shutdown and the serving error
// if the server fails first.
func serveHTTP(ctx context.Context, lis net.Listener, srv *http.Server) error {
	// Serve closes lis, unless Shutdown comes first.
	defer lis.Close()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if shutdownErr != nil {
		// Out of patience: drop the connections that are left.
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP on %s: %w", lis.Addr(), err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("shut down HTTP on %s: %w", lis.Addr(), shutdownErr)
	}
	return nil
}
