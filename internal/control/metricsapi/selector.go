package metricsapi

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Resource kinds the queries know, and the sample label each groups by.
var resourceLabels = map[string]string{
	"namespace": "namespace",
	"service":   "service",
	"workload":  "workload",
}

// aliases are the spellings the CLI accepts for each resource kind.
var aliases = map[string]string{
	"ns": "namespace", "namespace": "namespace", "namespaces": "namespace",
	"svc": "service", "service": "service", "services": "service",
	"wl": "workload", "workload": "workload", "workloads": "workload",
	"deploy": "workload", "deployment": "workload", "deployments": "workload",
	"srv": KindServer, "server": KindServer, "servers": KindServer,
}

// KindServer is the kind of stat rows per Server (policy.trellis.dev): its
// authorized and unauthorized traffic.
const KindServer = "server"

// ParseKind resolves a resource kind or alias (svc, wl, ns, deploy, …).
func ParseKind(s string) (string, error) {
	if k, ok := aliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", invalid("unknown resource kind %q: use service (svc), workload (wl), namespace (ns) or server (srv)", s)
}

// Ref names a resource: KIND/NAME (KIND defaults to workload).
type Ref struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// ParseRef parses KIND/NAME or NAME (a workload).
func ParseRef(s string) (Ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok {
		kind, name = "workload", s
	}
	k, err := ParseKind(kind)
	if err != nil {
		return Ref{}, err
	}
	if name == "" {
		return Ref{}, invalid("%q: no name after %s/", s, kind)
	}
	return Ref{Kind: k, Name: name}, nil
}

// DefaultWindow is the time window of a query when none is given.
const DefaultWindow = time.Minute

// checkWindow validates a query's window: rates need two samples in it,
// so at least two scrape intervals.
func (a *API) checkWindow(w time.Duration) error {
	if w < time.Second || w > 24*time.Hour {
		return invalid("time window %v: must be between 1s and 24h", w)
	}
	if min := 2 * a.ScrapeInterval; w < min {
		return invalid("time window %v: must be at least two scrape intervals (%v), or rates have fewer than two samples to go by", w, min)
	}
	return nil
}

// checkNames refuses names that are not UTF-8 (they cannot be labels).
func checkNames(names ...string) error {
	for _, n := range names {
		if !utf8.ValidString(n) {
			return invalid("%q is not valid UTF-8", n)
		}
	}
	return nil
}

// RequestError is a query the API refuses as asked (a bad kind, window or
// name): the caller's mistake, not the store's.
type RequestError struct{ msg string }

func (e *RequestError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &RequestError{fmt.Sprintf(format, args...)}
}

// matchers builds a PromQL label selector body from name → value pairs
// (empty values are left out), sorted for stable queries.
type matchers map[string]string

func (m matchers) String() string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + quote(m[k])
	}
	return strings.Join(parts, ",")
}

func (m matchers) with(k, v string) matchers {
	out := matchers{k: v}
	for kk, vv := range m {
		out[kk] = vv
	}
	return out
}

// quote renders a PromQL string literal.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// promDuration renders a window as a PromQL duration.
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
}
