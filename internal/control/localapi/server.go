// Package localapi is the local-mode control plane's API for the trellis
// CLI: resources (apply, get, list, delete), join tokens, instance
// addresses for network namespaces, status and shutdown, as JSON over
// HTTP on a unix socket in the data directory (file permissions are the
// access control).
package localapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/trellis-mesh/trellis/internal/control/identity"
	"github.com/trellis-mesh/trellis/internal/control/registry"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// Status describes a running control plane.
type Status struct {
	Version     string `json:"version"`
	PID         int    `json:"pid"`
	DataDir     string `json:"dataDir"`
	ControlAddr string `json:"controlAddr"` // identity + destination (gRPC, TLS)
	AdminAddr   string `json:"adminAddr"`
	// DashboardURL opens the dashboard, if it runs: its token is in the
	// URL, so only the socket's status has it.
	DashboardURL string `json:"dashboardUrl,omitempty"`
	DNSAddr      string `json:"dnsAddr,omitempty"`
	TrustDomain  string `json:"trustDomain"`
	// ClusterDomain is the DNS domain of services: NAME.NAMESPACE.svc.DOMAIN.
	ClusterDomain string `json:"clusterDomain"`
	TrustAnchor   string `json:"trustAnchor"` // PEM file proxies verify against
	// Network is the bridge network instances join in transparent mode;
	// empty when the control plane runs without one (explicit mode).
	Network string    `json:"network,omitempty"`
	Bridge  string    `json:"bridge,omitempty"`
	Gateway string    `json:"gateway,omitempty"`
	Started time.Time `json:"started"`
	// Metrics is where the metrics API's queries go: "embedded" or the
	// external Prometheus server's URL; TargetsFile is the file_sd file of
	// every proxy, for a Prometheus server to scrape.
	Metrics     string `json:"metrics"`
	TargetsFile string `json:"targetsFile"`
	// ScrapeInterval is how often proxies are scraped.
	ScrapeInterval string `json:"scrapeInterval"`
	// DefaultInboundPolicy is the mesh's default inbound policy for the
	// proxies `trellis run` starts ("": the proxies' own default).
	DefaultInboundPolicy string `json:"defaultInboundPolicy,omitempty"`
	// NamespaceInboundPolicies are namespaces' default inbound policies,
	// before the mesh's.
	NamespaceInboundPolicies map[string]string `json:"namespaceInboundPolicies,omitempty"`
}

// Config is what the API serves from.
type Config struct {
	Store       store.Store
	IPs         *registry.ClusterIPs
	TokenKey    ed25519.PrivateKey
	TrustDomain string
	// Kinds checks objects before a batch is written.
	Kinds store.Kinds
	// Addresses hands out instance IPs; nil without a bridge network.
	Addresses *Addresses
	Status    func() Status
	// Shutdown asks the control plane to stop.
	Shutdown func()
	// Mount adds handlers of other components (the metrics API, tap) by
	// their ServeMux patterns.
	Mount map[string]http.Handler
	Log   *slog.Logger
}

// Server is the API's HTTP server.
type Server struct {
	cfg Config
	srv *http.Server
	ln  net.Listener
}

// Listen binds the unix socket at path (replacing a stale one).
func Listen(path string, cfg Config) (*Server, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another control plane is running with this data directory", path)
	}
	os.Remove(path)
	old := syscall.Umask(0o177) // the socket is born 0600
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("local API socket: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln}
	mux := http.NewServeMux()
	s.route(mux, false)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// route registers the API's calls on mux; readOnly leaves out every call
// that changes the mesh, mints a token or stops the control plane, and
// mounted handlers of other methods than GET.
func (s *Server) route(mux *http.ServeMux, readOnly bool) {
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := s.cfg.Status()
		if readOnly {
			st.DashboardURL = ""
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/resources/{kind}", s.list)
	mux.HandleFunc("GET /v1/resources/{kind}/{namespace}/{name}", s.get)
	if !readOnly {
		mux.HandleFunc("PUT /v1/resources", s.apply)
		mux.HandleFunc("DELETE /v1/resources/{kind}/{namespace}/{name}", s.delete)
		mux.HandleFunc("POST /v1/join-tokens", s.joinToken)
		mux.HandleFunc("POST /v1/addresses", s.allocate)
		mux.HandleFunc("DELETE /v1/addresses/{owner}", s.release)
		mux.HandleFunc("POST /v1/shutdown", s.shutdown)
	}
	for pattern, h := range s.cfg.Mount {
		if !readOnly || strings.HasPrefix(pattern, "GET ") {
			mux.Handle(pattern, h)
		}
	}
}

// View is the read-only part of the API (status, resources, metrics,
// tap), for a listener other than the socket: in Kubernetes, the CLI
// reaches it through a port-forward, which the API server authorizes.
func (s *Server) View() http.Handler {
	mux := http.NewServeMux()
	s.route(mux, true)
	return mux
}

// Serve answers until ctx ends; streaming calls (tap) end with it.
func (s *Server) Serve(ctx context.Context) error { return ServeUntil(ctx, s.srv, s.ln, "local API") }

// ServeUntil serves srv on ln until ctx ends, then shuts it down (streams
// end with ctx; 2 s for the rest); name says what failed.
func ServeUntil(ctx context.Context, srv *http.Server, ln net.Listener, name string) error {
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Error is the body of every failed call.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	var ve *store.ValidationError
	var tooBig *http.MaxBytesError
	code := http.StatusInternalServerError
	e := Error{Error: err.Error()}
	switch {
	case errors.As(err, &tooBig):
		code = http.StatusRequestEntityTooLarge
		e.Error = fmt.Sprintf("the request is larger than the %d MiB the API takes at once: apply the objects in smaller batches", tooBig.Limit>>20)
	case errors.Is(err, store.ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.As(err, &ve):
		code, e.Field = http.StatusUnprocessableEntity, ve.Field
	case errors.Is(err, store.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, store.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, errBadRequest):
		code = http.StatusBadRequest
	}
	writeJSON(w, code, e)
}

var errBadRequest = errors.New("bad request")

// List is the body of a list answer.
type List struct {
	Items           []store.Resource `json:"items"`
	ResourceVersion uint64           `json:"resourceVersion"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	sel := labels.Everything()
	if q := r.URL.Query().Get("selector"); q != "" {
		var err error
		if sel, err = labels.Parse(q); err != nil {
			fail(w, fmt.Errorf("%w: selector: %v", errBadRequest, err))
			return
		}
	}
	items, rv, err := s.cfg.Store.List(r.Context(), r.PathValue("kind"), r.URL.Query().Get("namespace"), sel)
	if err != nil {
		fail(w, err)
		return
	}
	if items == nil {
		items = []store.Resource{}
	}
	writeJSON(w, http.StatusOK, List{Items: items, ResourceVersion: rv})
}

func key(r *http.Request) store.Key {
	return store.Key{Kind: r.PathValue("kind"), Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	res, err := s.cfg.Store.Get(r.Context(), key(r))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// ApplyRequest is a batch of objects to create or replace: all are
// validated, then written in one transaction (which checks the
// resourceVersions given) — all of them, or none.
type ApplyRequest struct {
	Items []store.Resource `json:"items"`
}

// Applied is what happened to one object of a batch.
type Applied struct {
	Object store.Resource `json:"object"`
	// Action is created, configured or unchanged.
	Action string `json:"action"`
}

// ApplyResponse lists the outcome of each object, in order.
type ApplyResponse struct {
	Items []Applied `json:"items"`
}

// MaxApplyBytes bounds an apply request.
const MaxApplyBytes = 8 << 20

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	var req ApplyRequest
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxApplyBytes))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) {
			err = fmt.Errorf("%w: %v", errBadRequest, err)
		}
		fail(w, err)
		return
	}
	prev := make([]string, len(req.Items)) // resourceVersions before, "" for new objects
	for i := range req.Items {
		item := req.Items[i] // a copy: checks may fill in defaults
		if err := store.Validate(&item, s.cfg.Kinds); err != nil {
			failItem(w, i, err)
			return
		}
		if cur, err := s.cfg.Store.Get(r.Context(), item.Key()); err == nil {
			prev[i] = cur.Metadata.ResourceVersion
		}
	}
	// The transaction checks each resourceVersion given (a conflict is an
	// ItemError like any other).
	got, err := s.cfg.IPs.ApplyAll(r.Context(), req.Items)
	if err != nil {
		var ie *store.ItemError
		if errors.As(err, &ie) {
			failItem(w, ie.Index, ie.Err)
		} else {
			fail(w, err)
		}
		return
	}
	var out ApplyResponse
	for i, obj := range got {
		action := "created"
		switch prev[i] {
		case "":
		case obj.Metadata.ResourceVersion:
			action = "unchanged"
		default:
			action = "configured"
		}
		out.Items = append(out.Items, Applied{Object: obj, Action: action})
	}
	writeJSON(w, http.StatusOK, out)
}

// failItem answers with err, saying which object of the batch failed.
func failItem(w http.ResponseWriter, i int, err error) {
	fail(w, fmt.Errorf("object %d: %w", i+1, err))
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.Delete(r.Context(), key(r)); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	Identity string        `json:"identity"`
	TTL      time.Duration `json:"ttl"`
	// Once asks for a single-use token: good for one certificate.
	Once bool `json:"once,omitempty"`
}

// TokenResponse carries a join token.
type TokenResponse struct {
	Token string `json:"token"`
}

func (s *Server) joinToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	id, err := meshid.Parse(req.Identity)
	if err != nil || id.TrustDomain != s.cfg.TrustDomain {
		fail(w, fmt.Errorf("%w: identity %q: not a SPIFFE ID of trust domain %s", errBadRequest, req.Identity, s.cfg.TrustDomain))
		return
	}
	if req.TTL <= 0 {
		req.TTL = 24 * time.Hour
	}
	tok, err := identity.IssueJoinToken(s.cfg.TokenKey, id, req.TTL, req.Once, time.Now())
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	writeJSON(w, http.StatusOK, TokenResponse{Token: tok})
}

// AddressRequest asks for an instance address on the bridge network.
type AddressRequest struct {
	Owner string `json:"owner"`
}

// AddressResponse is an allocated address and its prefix length.
type AddressResponse struct {
	Address netip.Addr `json:"address"`
	Bits    int        `json:"bits"`
}

func (s *Server) allocate(w http.ResponseWriter, r *http.Request) {
	var req AddressRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Owner == "" {
		fail(w, fmt.Errorf("%w: want {\"owner\": NAME}", errBadRequest))
		return
	}
	if s.cfg.Addresses == nil {
		fail(w, fmt.Errorf("%w: this control plane has no bridge network (start it as root)", errBadRequest))
		return
	}
	a, err := s.cfg.Addresses.Allocate(req.Owner)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AddressResponse{Address: a, Bits: s.cfg.Addresses.Prefix.Bits()})
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Addresses != nil {
		s.cfg.Addresses.Release(r.PathValue("owner"))
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) shutdown(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusAccepted)
	s.cfg.Shutdown()
}
