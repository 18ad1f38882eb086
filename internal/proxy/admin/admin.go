// Package admin serves the proxy's admin endpoints: /metrics (Prometheus
// text format), /ready, /live, and — to loopback clients only — POST
// /shutdown and Go profiles under /debug/pprof/.
package admin

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// State is what the admin server reports on and acts upon.
type State interface {
	// Ready reports whether the proxy can serve traffic.
	Ready() bool
	// Shutdown starts a graceful shutdown.
	Shutdown()
}

// Handler returns the admin HTTP handler.
func Handler(reg *metrics.Registry, st State) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		reg.WriteText(w)
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if !st.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	// Profiles, like shutdown, are for operators on the same host only.
	mux.HandleFunc("/debug/pprof/", loopbackOnly(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", loopbackOnly(pprof.Profile))
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "shutdown is only allowed from localhost", http.StatusForbidden)
			return
		}
		w.Write([]byte("shutting down\n"))
		st.Shutdown()
	})
	return mux
}

func loopbackOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "profiles are only served to localhost", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
