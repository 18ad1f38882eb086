package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	fs.BoolVar(&o.Expose, "web-expose", false, "allow --web-addr beyond loopback: whoever reaches it (with the URL's token) sees the whole mesh")
	fs.StringSliceVar(&o.Hosts, "web-host", nil, "a host name the dashboard answers to besides its address, localhost and loopback (requests naming any other Host are refused, against DNS rebinding); repeatable")
}

// cookie holds the token a browser proved once, on the dashboard's URL.
const cookie = "trellis-dashboard"

// Server is a listening dashboard. Its pages are open, but its API calls
// need the token of its URL (which only who could read the control
// plane's status learns): the URL's ?token= sets a same-site cookie that
// every later call carries, so other local users and other sites' pages
// get nothing.
type Server struct {
	ln    net.Listener
	token string
	srv   *http.Server
}

// Start binds o.Addr, refusing an address beyond loopback unless
// o.Expose, to serve the pages and, under /v1/, api (the read-only API).
func Start(o Options, api http.Handler) (*Server, error) {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard address %q: %w", o.Addr, err)
	}
	if !o.Expose {
		ip, err := netip.ParseAddr(host)
		if (err != nil && host != "localhost") || (err == nil && !ip.IsLoopback()) {
			return nil, fmt.Errorf("dashboard address %s: not a loopback address; the dashboard shows the whole mesh to whoever reaches it, so give --web-expose to serve it there", o.Addr)
		}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if errors.Is(err, syscall.EADDRINUSE) && o.AnyPort {
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	s := &Server{ln: ln, token: rand.Text()}
	s.srv = &http.Server{Handler: s.handler(api, o.Hosts), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is where it listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the dashboard's address with its token, for a person to open: on
// a wildcard listener, by its loopback address.
func (s *Server) URL() string {
	host := s.ln.Addr().String()
	if a, err := netip.ParseAddrPort(host); err == nil && a.Addr().IsUnspecified() {
		host = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port()).String()
	}
	return "http://" + host + "/?token=" + s.token
}

// Serve answers until ctx ends (streams such as tap end with it).
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s.srv.Shutdown(shut) != nil {
			s.srv.Close()
		}
	})
	defer stop()
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops listening (a dashboard that never served).
func (s *Server) Close() error { return s.ln.Close() }

// Proxy relays the dashboard's API calls to the read-only API at u (a
// destination service's --view-addr), addressed to u's host.
func Proxy(u *url.URL) http.Handler {
	return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
}

func (s *Server) handler(api http.Handler, hosts []string) http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.FileServerFS(static)
	allowed := allowedHosts(s.ln.Addr(), hosts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !allowed(r.Host) {
			http.Error(w, fmt.Sprintf("host %q is not one this dashboard serves (DNS-rebinding protection)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		isAPI := strings.HasPrefix(r.URL.Path, "/v1/")
		allow := "GET, HEAD" // pages; the API's streams have no HEAD
		if isAPI {
			allow = "GET"
		}
		if r.Method != http.MethodGet && !(r.Method == http.MethodHead && !isAPI) {
			h.Set("Allow", allow)
			http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
			return
		}
		if t := r.URL.Query().Get("token"); t != "" && !isAPI {
			if !s.valid(t) {
				http.Error(w, "this dashboard URL's token is not the current one: ask 'trellis dashboard' for the URL", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookie, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther) // the token leaves the address bar
			return
		}
		if isAPI {
			if c, err := r.Cookie(cookie); err != nil || !s.valid(c.Value) {
				http.Error(w, `{"error":"open the dashboard by the URL with its token ('trellis dashboard' prints it)"}`, http.StatusUnauthorized)
				return
			}
			api.ServeHTTP(w, r)
			return
		}
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

func (s *Server) valid(token string) bool {
	return subtle.ConstantTimeCompare([]byte(token), []byte(s.token)) == 1
}

// allowedHosts returns whether a Host header names the listener: its
// address, localhost, 127.0.0.1, ::1 or one of hosts, with the listener's
// port or none.
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
