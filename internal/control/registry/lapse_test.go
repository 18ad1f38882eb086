package registry

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// A busy host does not empty services whose proxies are alive: a control
// plane that did not run for a while lets the proxies renew before any
// lease lapses (their renewals counted late); when most leases lapse in
// one sweep they are held (self-preservation) — those renewed stay, the
// others go once they are the minority or after three TTLs; a lease
// lapsing on its own goes at once.
func TestBusyHostKeepsLiveLeases(t *testing.T) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	db := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	defer db.Close()
	g := newRegistry(db, c)
	names := []string{"web-0", "web-1", "web-2", "web-3"}
	for i, n := range names {
		req := request(n)
		req.MeshPort = uint32(4143 + i)
		if _, err := g.Register(as(web), req); err != nil {
			t.Fatal(err)
		}
	}
	renew := func(names ...string) {
		t.Helper()
		for _, n := range names {
			if _, err := g.Renew(as(web), &destinationv1.RenewRequest{Name: n}); err != nil {
				t.Fatalf("renew %s: %v", n, err)
			}
		}
	}
	alive := func() (out []string) {
		for _, n := range names {
			if exists(t, db, n) {
				out = append(out, n)
			}
		}
		return out
	}
	event := func(e string) float64 { return testutil.ToFloat64(g.leaseEv.WithLabelValues(e)) }
	sweepFor(g, c, time.Second)

	// The control plane stalls 10 s (three TTLs): nothing lapses; the
	// renewals, late, keep everything.
	c.Advance(10 * time.Second)
	g.expire(context.Background())
	if got := alive(); len(got) != 4 {
		t.Fatalf("after a control-plane stall: %v registered", got)
	}
	renew(names...)
	if event("late") != 4 {
		t.Errorf("late renewals counted: %v, want 4", event("late"))
	}

	// The proxies stall past their TTL: all lapse in one sweep, and are held.
	sweepFor(g, c, 3*time.Second+500*time.Millisecond)
	if got := alive(); len(got) != 4 || event("held") != 4 {
		t.Fatalf("after every lease lapsed at once: %v registered, %v held", got, event("held"))
	}
	// Three come back; the fourth, a minority now, goes.
	renew("web-0", "web-1", "web-2")
	sweepFor(g, c, time.Second)
	if got := fmt.Sprint(alive()); got != "[web-0 web-1 web-2]" {
		t.Fatalf("after three renewed: %s registered", got)
	}

	// One lease lapsing on its own goes at once.
	sweepFor(g, c, time.Second)
	renew("web-0", "web-1")
	sweepFor(g, c, 1500*time.Millisecond)
	renew("web-0", "web-1")
	if got := fmt.Sprint(alive()); got != "[web-0 web-1]" {
		t.Fatalf("after web-2 stopped renewing: %s registered", got)
	}

	// All stop for good: held three TTLs past their expiry, then gone.
	sweepFor(g, c, 3*time.Second+3*3*time.Second-time.Second)
	if got := alive(); len(got) != 2 {
		t.Fatalf("within the hold: %v registered", got)
	}
	sweepFor(g, c, 2*time.Second)
	if got := alive(); len(got) != 0 {
		t.Fatalf("after the hold: %v registered", got)
	}
}
