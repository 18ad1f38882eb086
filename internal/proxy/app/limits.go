package app

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// connectionLimits derives the listeners' connection limits from cfg and
// the file-descriptor limit (a proxied connection holds two descriptors,
// and inbound and outbound share them): --max-connections, else a quarter
// of the limit; per source (inbound only: outbound's one client is the
// application), --max-connections-per-source, else a quarter of that.
func connectionLimits(cfg *config.Config) map[transport.Direction]transport.Limits {
	limit := cfg.MaxConnections
	if limit == 0 {
		var rl syscall.Rlimit
		limit = 1 << 16
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<20 {
			limit = max(int(rl.Cur)/4, 64)
		}
	}
	perSource := cfg.MaxConnectionsPerSource
	if perSource == 0 {
		perSource = max(limit/4, 16)
	}
	return map[transport.Direction]transport.Limits{
		transport.Inbound:  {Max: limit, PerSource: perSource},
		transport.Outbound: {Max: limit},
	}
}

// refusals counts and logs the connections a limit refused; the log says
// so at most every 10 s per direction, with the count since.
type refusals struct {
	log   *slog.Logger
	count map[transport.Direction]*atomic.Uint64
	mu    sync.Mutex
	last  map[transport.Direction]time.Time
	since map[transport.Direction]uint64
}

func newRefusals(reg *metrics.Registry, log *slog.Logger) *refusals {
	r := &refusals{log: log, count: map[transport.Direction]*atomic.Uint64{}, last: map[transport.Direction]time.Time{}, since: map[transport.Direction]uint64{}}
	for _, dir := range []transport.Direction{transport.Inbound, transport.Outbound} {
		c := &atomic.Uint64{}
		r.count[dir] = c
		reg.Counter(string(dir)+"_connections_refused_total",
			"Connections the "+string(dir)+" listener closed as accepted: over --max-connections, or (inbound) --max-connections-per-source from one client.",
			func() float64 { return float64(c.Load()) })
	}
	return r
}

func (r *refusals) refused(dir transport.Direction, reason string, client netip.AddrPort) {
	r.count[dir].Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since[dir]++
	if now := time.Now(); now.Sub(r.last[dir]) >= 10*time.Second {
		r.log.Warn("connections refused: a connection limit is reached", "direction", dir, "reason", reason, "client", client.String(),
			"refused_since_last_report", r.since[dir])
		r.last[dir], r.since[dir] = now, 0
	}
}
