package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetNSDir is where `ip netns add` keeps named network namespaces.
const NetNSDir = "/var/run/netns"

// InNetNS runs fn on an OS thread that has joined the named network
// namespace (one made with `ip netns add`) and returns fn's error. Sockets fn
// creates belong to that namespace for their whole life, whichever thread
// uses them later. fn runs on its own goroutine, locked to the thread, and
// must not start goroutines that create sockets.
func InNetNS(name string, fn func() error) error {
	target, err := unix.Open(filepath.Join(NetNSDir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread stays locked, so the runtime ends it with this
			// goroutine instead of reusing it in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leaving network namespace %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenInNetNS is net.Listen inside the named network namespace.
func ListenInNetNS(name, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNetNS(name, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// NetNSDialer dials from inside a network namespace. Its DialContext fits
// http.Transport.DialContext, grpc.WithContextDialer (via a wrapper) and
// websocket.Dialer.NetDialContext.
type NetNSDialer struct {
	// NetNS names the namespace; empty means the current one.
	NetNS string
	net.Dialer
}

// DialContext connects to addr from inside d.NetNS.
func (d *NetNSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.NetNS == "" {
		return d.Dialer.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := InNetNS(d.NetNS, func() (err error) {
		c, err = d.Dialer.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
