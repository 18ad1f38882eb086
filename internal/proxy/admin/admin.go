// Package admin serves the proxy's admin endpoints: /metrics (Prometheus
// text format), /ready, /live, /probe/tcp/PORT (the application's TCP
// probes, see tcpProbe), and — to loopback clients only — POST
// /shutdown, Go profiles under /debug/pprof/ and the recent requests'
// routing decisions on /debug/decisions.
package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// State is what the admin server reports on and acts upon.
type State interface {
	// NotReady says why the proxy cannot serve traffic, or is "".
	NotReady() string
	// Shutdown starts a graceful shutdown.
	Shutdown()
}

// Handler returns the admin HTTP handler; decisions (may be nil) is served
// on /debug/decisions, and tcpProbes are the ports /probe/tcp/ checks.
func Handler(reg *metrics.Registry, st State, decisions *explain.Journal, tcpProbes map[uint16]bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /probe/tcp/{port}", tcpProbe(tcpProbes))
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		reg.WriteText(w)
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if why := st.NotReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	// Profiles, like shutdown, are for operators on the same host only.
	mux.HandleFunc("/debug/pprof/", loopbackOnly(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", loopbackOnly(pprof.Profile))
	// What the outbound stack decided for recent requests, newest first.
	mux.HandleFunc("GET /debug/decisions", loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n <= 0 || n > explain.Size {
			n = 100
		}
		list := []explain.Decision{}
		if decisions != nil {
			list = decisions.Recent(n, nil)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"decisions": list})
	}))
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
			http.Error(w, "only served to localhost", http.StatusForbidden)
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
