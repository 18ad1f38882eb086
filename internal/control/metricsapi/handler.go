package metricsapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Handler serves the API as JSON for the CLI:
//
//	GET /v1/stat?kind=&name=&namespace=&from=&to=&window=
//	GET /v1/series?kind=&name=&namespace=&from=&to=&window=&points=&step=
//	GET /v1/routes?service=&namespace=&from=&window=
//	GET /v1/edges?namespace=&window=
//	GET /v1/authz?workload=&namespace=&window=
//	GET /v1/certificates?namespace=
//	GET /v1/proxy-metrics/{namespace}/{name}   (a workload's raw /metrics)
//
// Bad parameters are 400s naming the parameter.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stat", func(w http.ResponseWriter, r *http.Request) {
		req, err := parseStat(r.URL.Query())
		if err != nil {
			badRequest(w, err)
			return
		}
		rows, err := a.Stat(r.Context(), req)
		reply(w, map[string]any{"rows": rows, "window": req.Window.String()}, err)
	})
	mux.HandleFunc("GET /v1/series", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := SeriesRequest{Points: 30, Step: 10 * time.Second}
		var err error
		req.StatRequest, err = parseStat(q)
		if s := q.Get("points"); s != "" {
			n, perr := strconv.Atoi(s)
			if perr != nil {
				perr = fmt.Errorf("points %q: not a number", s)
			}
			req.Points, err = n, errors.Join(err, perr)
		}
		if s := q.Get("step"); s != "" {
			d, perr := time.ParseDuration(s)
			if perr != nil {
				perr = fmt.Errorf("step %q: %w", s, perr)
			}
			req.Step, err = d, errors.Join(err, perr)
		}
		if err != nil {
			badRequest(w, err)
			return
		}
		series, err := a.Series(r.Context(), req)
		reply(w, series, err)
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := RoutesRequest{Service: q.Get("service"), Namespace: q.Get("namespace")}
		err := errors.Join(parseWindow(q, &req.Window), parseRef(q, "from", &req.From))
		if req.Service == "" {
			err = errors.Join(err, errors.New("service: required"))
		}
		if err != nil {
			badRequest(w, err)
			return
		}
		rows, err := a.Routes(r.Context(), req)
		reply(w, map[string]any{"rows": rows, "window": req.Window.String()}, err)
	})
	mux.HandleFunc("GET /v1/edges", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := EdgesRequest{Namespace: q.Get("namespace")}
		if err := parseWindow(q, &req.Window); err != nil {
			badRequest(w, err)
			return
		}
		rows, err := a.Edges(r.Context(), req)
		reply(w, map[string]any{"rows": rows, "window": req.Window.String()}, err)
	})
	mux.HandleFunc("GET /v1/authz", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := AuthzRequest{Workload: q.Get("workload"), Namespace: q.Get("namespace")}
		err := parseWindow(q, &req.Window)
		if req.Workload == "" {
			err = errors.Join(err, errors.New("workload: required"))
		}
		if err != nil {
			badRequest(w, err)
			return
		}
		rows, err := a.Authz(r.Context(), req)
		reply(w, map[string]any{"rows": rows, "window": req.Window.String()}, err)
	})
	mux.HandleFunc("GET /v1/certificates", func(w http.ResponseWriter, r *http.Request) {
		rows, err := a.Certificates(r.Context(), r.URL.Query().Get("namespace"))
		reply(w, map[string]any{"rows": rows}, err)
	})
	mux.HandleFunc("GET /v1/proxy-metrics/{namespace}/{name}", a.proxyMetrics)
	return mux
}

// proxyMetrics relays one workload's /metrics as its proxy exposes them.
func (a *API) proxyMetrics(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	targets, err := Targets(r.Context(), a.Store)
	if err != nil {
		reply(w, nil, err)
		return
	}
	for _, t := range targets {
		if t.Labels["namespace"] != ns || t.Labels["pod"] != name {
			continue
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+t.Addr+"/metrics", nil)
		if err != nil {
			reply(w, nil, err)
			return
		}
		client := http.Client{Timeout: 10 * time.Second}
		resp, err := client.Do(req)
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Errorf("workload %s/%s: proxy admin %s: %w", ns, name, t.Addr, err))
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			writeError(w, http.StatusBadGateway, fmt.Errorf("workload %s/%s: proxy admin %s: GET /metrics: %s", ns, name, t.Addr, resp.Status))
			return
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		io.Copy(w, io.LimitReader(resp.Body, MaxScrapeBytes))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("workload %s/%s: not registered, or its proxy has no admin port", ns, name))
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// parseStat reads a StatRequest's parameters.
func parseStat(q url.Values) (StatRequest, error) {
	req := StatRequest{Name: q.Get("name"), Namespace: q.Get("namespace")}
	var err error
	req.Kind, err = ParseKind(orDefault(q.Get("kind"), "workload"))
	err = errors.Join(err, parseWindow(q, &req.Window), parseRef(q, "from", &req.From), parseRef(q, "to", &req.To))
	return req, err
}

// parseWindow reads the window parameter into w (DefaultWindow if absent).
func parseWindow(q url.Values, w *time.Duration) error {
	s := q.Get("window")
	if s == "" {
		*w = DefaultWindow
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("window %q: %w", s, err)
	}
	*w = d
	return nil
}

// parseRef reads the optional KIND/NAME parameter name into ref.
func parseRef(q url.Values, name string, ref **Ref) error {
	s := q.Get(name)
	if s == "" {
		return nil
	}
	r, err := ParseRef(s)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	*ref = &r
	return nil
}

// reply answers v, or err: a 400 for a RequestError, else a 500.
func reply(w http.ResponseWriter, v any, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		badRequest(w, err)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func badRequest(w http.ResponseWriter, err error) { writeError(w, http.StatusBadRequest, err) }

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
