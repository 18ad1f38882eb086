package metricsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// Job is the job label of every proxy target.
const Job = "trellis-proxy"

// MaxScrapeBytes bounds one proxy's /metrics response.
const MaxScrapeBytes = 32 << 20

// Target is one proxy to scrape: its admin address and the labels its
// samples get — namespace, workload, pod (the instance) and service, the
// names the queries group by.
type Target struct {
	Addr   string
	Labels map[string]string
}

// Lister lists the workloads whose proxies are scraped.
type Lister interface {
	List(ctx context.Context, kind, namespace string, sel labels.Selector) ([]store.Resource, uint64, error)
}

// Targets lists the proxies of every registered workload that has an admin
// port, sorted by address.
func Targets(ctx context.Context, st Lister) ([]Target, error) {
	wls, _, err := st.List(ctx, resources.KindWorkload, "", nil)
	if err != nil {
		return nil, fmt.Errorf("listing workloads: %w", err)
	}
	var out []Target
	for _, w := range wls {
		var spec resources.WorkloadSpec
		if resources.Decode(w.Spec, &spec) != nil || spec.AdminPort == 0 || spec.Address == "" {
			continue
		}
		workload := resources.WorkloadOf(w.Metadata)
		out = append(out, Target{
			Addr: net.JoinHostPort(spec.Address, strconv.Itoa(spec.AdminPort)),
			Labels: map[string]string{"namespace": w.Metadata.Namespace, "workload": workload, "pod": w.Metadata.Name,
				"service": spec.Service},
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

// WriteFileSD writes targets as a Prometheus file_sd file, atomically (a
// rename), so a Prometheus server watching it never reads half of one.
func WriteFileSD(path string, targets []Target) error {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := make([]group, 0, len(targets))
	for _, t := range targets {
		labels := map[string]string{"job": Job}
		for k, v := range t.Labels {
			labels[k] = v
		}
		groups = append(groups, group{Targets: []string{t.Addr}, Labels: labels})
	}
	b, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".targets-*")
	if err != nil {
		return fmt.Errorf("file_sd: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("file_sd: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("file_sd: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("file_sd: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("file_sd: %w", err)
	}
	return nil
}
