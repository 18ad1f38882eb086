package registry

import (
	"context"
	"errors"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// DefaultServiceGC is how long a created Service may stay without a
// workload before it is collected.
const DefaultServiceGC = 10 * time.Minute

// collectEvery is how often collect runs.
const collectEvery = 30 * time.Second

// collect deletes the created Services (resources.CreatedByAnnotation)
// that have had no workload for the GC delay, freeing their virtual IPs. Called with g.mu, so no registration recreates one meanwhile.
func (g *Registry) collect(ctx context.Context) error {
	svcs, _, err := g.cfg.Store.List(ctx, resources.KindService, "", nil)
	if err != nil {
		return err
	}
	wls, _, err := g.cfg.Store.List(ctx, resources.KindWorkload, "", nil)
	if err != nil {
		return err
	}
	served := map[string]bool{}
	for _, w := range wls {
		var spec resources.WorkloadSpec
		if resources.Decode(w.Spec, &spec) == nil {
			served[w.Metadata.Namespace+"/"+spec.Service] = true
		}
	}
	now := g.cfg.Now()
	seen := map[string]bool{}
	for _, s := range svcs {
		key := s.Metadata.Namespace + "/" + s.Metadata.Name
		if s.Metadata.Annotations[resources.CreatedByAnnotation] == "" || served[key] {
			continue
		}
		seen[key] = true
		since, ok := g.empty[key]
		if !ok {
			g.empty[key] = now
			continue
		}
		if now.Sub(since) < g.cfg.ServiceGC {
			continue
		}
		err := g.cfg.Store.Delete(ctx, s.Key())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		delete(g.empty, key)
		g.cfg.Log.Info("service collected: no instance for a while", "service", key, "empty_for", now.Sub(since).Round(time.Second).String())
	}
	for key := range g.empty {
		if !seen[key] {
			delete(g.empty, key) // served again, or gone
		}
	}
	return nil
}
