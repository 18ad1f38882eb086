package explain

import (
	"testing"
	"time"
)

// A Journal merges its two logs newest first; each log keeps its last Size
// decisions, whatever the other's traffic; keep filters.
func TestJournalRecent(t *testing.T) {
	var j Journal
	t0 := time.Now()
	for i := range Size + 10 { // the oldest 10 outbound decisions fall out
		j.Outbound.Record(&Decision{Time: t0.Add(time.Duration(2*i) * time.Millisecond), Direction: "outbound", Path: "/out"})
	}
	j.Inbound.Record(&Inbound{Time: t0.Add(time.Duration(2*Size+21) * time.Millisecond), Path: "/in",
		Policy: Policy{Server: "web-http", Allowed: true}})
	j.Inbound.Record(&Inbound{Time: t0.Add(-time.Hour), Path: "/old"})

	got := j.Recent(3, nil)
	if len(got) != 3 || got[0].Path != "/in" || got[1].Path != "/out" || !got[1].Time.After(got[2].Time) {
		t.Fatalf("Recent(3) = %v, want the inbound decision, then the two newest outbound ones", paths(got))
	}
	if got[0].Policy == nil || got[0].Policy.Server != "web-http" {
		t.Errorf("the inbound decision lost its policy: %+v", got[0].Policy)
	}
	all := j.Recent(2*Size, nil)
	if len(all) != Size+2 || all[len(all)-1].Path != "/old" || !all[len(all)-2].Time.Equal(t0.Add(20*time.Millisecond)) {
		t.Errorf("Recent(all): %d decisions ending %v; want %d, the inbound one of an hour ago last, outbound from the 11th on", len(all), paths(all[len(all)-2:]), Size+2)
	}
	in := j.Recent(10, func(d *Decision) bool { return d.Direction == "inbound" })
	if len(in) != 2 || in[0].Path != "/in" || in[1].Path != "/old" {
		t.Errorf("Recent(inbound) = %v, want /in then /old", paths(in))
	}
}

func paths(ds []Decision) []string {
	var out []string
	for i := range ds {
		out = append(out, ds[i].Path)
	}
	return out
}
