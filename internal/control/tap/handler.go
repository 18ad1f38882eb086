package tap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
)

// Resolve decides, for one HTTP request, which proxies to tap and what to
// ask them (ParseQuery reads the usual query parameters).
type Resolve func(r *http.Request) ([]Target, *tapv1.ObserveRequest, error)

// Handler streams the merged events of the proxies resolve names as NDJSON:
// one JSON Event per line, flushed as each arrives, until the client goes
// away or every stream has ended. A resolve error is a 400 with its text,
// no proxies a 404.
func Handler(c *Client, resolve Resolve) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "tap: use GET", http.StatusMethodNotAllowed)
			return
		}
		targets, req, err := resolve(r)
		if err != nil {
			http.Error(w, "tap: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(targets) == 0 {
			http.Error(w, "tap: no registered instance of the target has a tap port", http.StatusNotFound)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		// Cancelling stops every stream; their goroutines never wait on
		// a reader that has gone.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		enc := json.NewEncoder(w)
		for ev := range c.Observe(ctx, targets, req) {
			if err := enc.Encode(ev); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
}

// ParseQuery reads an ObserveRequest from query parameters: method, path
// (a prefix), authority, to, direction (inbound or outbound) and max_rps.
// Other parameters are left for the caller.
func ParseQuery(q url.Values) (*tapv1.ObserveRequest, error) {
	req := &tapv1.ObserveRequest{
		Method:     q.Get("method"),
		PathPrefix: q.Get("path"),
		Authority:  q.Get("authority"),
		To:         q.Get("to"),
		Direction:  q.Get("direction"),
	}
	switch req.Direction {
	case "", "inbound", "outbound":
	default:
		return nil, fmt.Errorf("direction %q: want inbound or outbound", req.Direction)
	}
	if s := q.Get("max_rps"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("max_rps %q: want a whole number of requests per second: %w", s, err)
		}
		req.MaxRps = uint32(n)
	}
	return req, nil
}
