package app

import (
	"log/slog"
	"net"
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

// Servers outside the transport stack (the admin server: probes, scrapes
// and the loopback endpoints; tap, which only the control plane may use)
// serve few clients: their connections are bounded so that nobody on the
// network can hold enough of them to take the proxy's descriptors.
const (
	adminListener transport.Direction = "admin"
	tapListener   transport.Direction = "tap"
)

var serverLimits = transport.Limits{Max: 1024, PerSource: 64}

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
	for dir, help := range map[transport.Direction]string{
		transport.Inbound:  "Connections the inbound listener closed as accepted: over --max-connections, or --max-connections-per-source from one client.",
		transport.Outbound: "Connections the outbound listener closed as accepted: over --max-connections.",
		adminListener:      "Connections the admin server closed as accepted: over 1,024, or over 64 from one client.",
		tapListener:        "Connections the tap server closed as accepted: over 1,024, or over 64 from one client.",
	} {
		c := &atomic.Uint64{}
		r.count[dir] = c
		reg.Counter(string(dir)+"_connections_refused_total", help, func() float64 { return float64(c.Load()) })
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

// limitListener bounds ln's connections by serverLimits, counting and
// logging refusals as dir's.
func limitListener(ln net.Listener, dir transport.Direction, r *refusals) net.Listener {
	return transport.LimitListener(ln, serverLimits, func(reason string, client netip.AddrPort) { r.refused(dir, reason, client) })
}
