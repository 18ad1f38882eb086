package web

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

//go:embed assets
var assets embed.FS

// Options configure the dashboard's listener.
type Options struct {
	// Addr is where it listens (host:port).
	Addr string
	// Expose allows an address other than loopback.
	Expose bool
	// AnyPort, if the port is taken, listens on another: a default port,
	// so that control planes side by side each get a dashboard.
	AnyPort bool
	// Hosts are names, besides the listener's address, localhost and the
	// loopback addresses, that requests may address it by (the Host
	// header), e.g. a name a reverse proxy forwards.
	Hosts []string
}

// Flags registers --web-addr, --web-expose and --web-host.
func (o *Options) Flags(fs *pflag.FlagSet, defaultAddr string) {
	fs.StringVar(&o.Addr, "web-addr", defaultAddr, "address serving the dashboard (a browser's view of the mesh, read-only); empty: none")
	fs.BoolVar(&o.Expose, "web-expose", false, "allow --web-addr beyond loopback: whoever reaches it sees the whole mesh")
	fs.StringSliceVar(&o.Hosts, "web-host", nil, "a host name the dashboard answers to besides its address, localhost and loopback (requests naming any other Host are refused, against DNS rebinding); repeatable")
}

// Listen binds o.Addr, refusing an address beyond loopback unless
// o.Expose.
func Listen(o Options) (net.Listener, error) {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("--web-addr %q: %w", o.Addr, err)
	}
	if !o.Expose {
		ip, err := netip.ParseAddr(host)
		if (err != nil && host != "localhost") || (err == nil && !ip.IsLoopback()) {
			return nil, fmt.Errorf("--web-addr %s: not a loopback address; the dashboard shows the whole mesh to whoever reaches it, so give --web-expose to serve it there", o.Addr)
		}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if errors.Is(err, syscall.EADDRINUSE) && o.AnyPort {
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("--web-addr: %w", err)
	}
	return ln, nil
}

// Handler serves the dashboard's pages and, under /v1/, api (the
// read-only API), to requests addressed to the listener at addr or to one
// of hosts.
func Handler(api http.Handler, addr net.Addr, hosts []string) http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	files := http.FileServerFS(static)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	allowed := allowedHosts(addr, hosts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !allowed(r.Host) {
			http.Error(w, fmt.Sprintf("host %q is not one this dashboard serves; start it with --web-host %s to allow it", r.Host, hostOnly(r.Host)), http.StatusMisdirectedRequest)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// allowedHosts returns whether a Host header names the listener: its
// address, localhost or a loopback address, or one of hosts, with the
// listener's port or none.
func allowedHosts(addr net.Addr, hosts []string) func(string) bool {
	names := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	port := ""
	if a, err := netip.ParseAddrPort(addr.String()); err == nil {
		port = strconv.Itoa(int(a.Port()))
		if !a.Addr().IsUnspecified() {
			names = append(names, a.Addr().Unmap().String())
		}
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	return func(hostport string) bool {
		host, p, err := net.SplitHostPort(hostport)
		if err != nil {
			var addrErr *net.AddrError
			if !errors.As(err, &addrErr) || !strings.Contains(addrErr.Err, "missing port") {
				return false
			}
			host, p = strings.Trim(hostport, "[]"), port
		}
		return p == port && slices.Contains(names, strings.ToLower(host))
	}
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
