package cli

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
)

// Tables of the observability commands, modelled on Linkerd viz's.

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 3, ' ', 0) }

func printStat(w io.Writer, rows []metricsapi.StatRow, namespaces, wide bool) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No traffic found.")
		return
	}
	tw := newTable(w)
	defer tw.Flush()
	servers := rows[0].Kind == metricsapi.KindServer
	header := "NAME\tMESHED\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tTCP_CONN"
	if servers {
		header = "NAME\tINSTANCES\tRPS\tUNAUTHORIZED"
	}
	if namespaces && rows[0].Kind != "namespace" {
		header = "NAMESPACE\t" + header
	}
	if wide && !servers {
		header += "\tUNAUTHORIZED\tREAD_BYTES/SEC\tWRITE_BYTES/SEC"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		if namespaces && r.Kind != "namespace" {
			fmt.Fprintf(tw, "%s\t", r.Namespace)
		}
		if servers {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Name, r.Instances, rps(r), unauthorized(r))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%d", r.Name, r.Meshed, r.Instances, percent(r.Success), rps(r),
			latency(r.LatencyP50), latency(r.LatencyP95), latency(r.LatencyP99), r.TCPConnections)
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", unauthorized(r), bytesRate(r.ReadBytesPerSec), bytesRate(r.WriteBytesPerSec))
		}
		fmt.Fprintln(tw)
	}
}

// unauthorized is the rate of calls the row's policies denied.
func unauthorized(r metricsapi.StatRow) string {
	if r.UnauthorizedPerSec == 0 {
		return "-"
	}
	return strconv.FormatFloat(r.UnauthorizedPerSec, 'f', 1, 64) + "rps"
}

func printRoutes(w io.Writer, rows []metricsapi.RouteRow, wide bool) {
	tw := newTable(w)
	defer tw.Flush()
	header := "ROUTE\tSERVICE\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tRETRIES\tTIMEOUTS"
	if wide {
		header = "ROUTE\tKIND\tSERVICE\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tRETRIES\tTIMEOUTS\tRETRIES/SEC\tTIMEOUTS/SEC"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t", r.Route)
		if wide {
			fmt.Fprintf(tw, "%s\t", dash(r.Kind))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r.Service, percent(r.Success), rateOf(r.Golden),
			latency(r.LatencyP50), latency(r.LatencyP95), latency(r.LatencyP99), share(r.RetriesPerSec, r.RPS+r.RetriesPerSec), share(r.TimeoutsPerSec, r.RPS))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s", perSec(r.RetriesPerSec), perSec(r.TimeoutsPerSec))
		}
		fmt.Fprintln(tw)
	}
}

func printEdges(w io.Writer, rows []metricsapi.Edge, wide bool) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No edges found.")
		return
	}
	tw := newTable(w)
	defer tw.Flush()
	header := "SRC\tDST\tSRC_NS\tDST_NS\tSECURED"
	if wide {
		header += "\tCLIENT_ID\tSERVER_ID"
	}
	fmt.Fprintln(tw, header)
	for _, e := range rows {
		secured := "√"
		if !e.Secured {
			secured = "×"
			if e.NoTLSReason != "" {
				secured += " (" + e.NoTLSReason + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", e.Src, e.Dst, e.SrcNamespace, e.DstNamespace, secured)
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s", dash(e.ClientID), dash(e.ServerID))
		}
		fmt.Fprintln(tw)
	}
}

func rps(r metricsapi.StatRow) string { return rateOf(r.Golden) }

func rateOf(g metricsapi.Golden) string {
	if g.Success == nil && g.RPS == 0 {
		return "-"
	}
	return strconv.FormatFloat(g.RPS, 'f', 1, 64) + "rps"
}

func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v*100, 'f', 2, 64) + "%"
}

// latency renders milliseconds: tenths below 10 ms, whole above (9.96 is
// 10ms, not 10.0ms).
func latency(v *float64) string {
	if v == nil {
		return "-"
	}
	if math.Round(*v*10) < 100 {
		return strconv.FormatFloat(*v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(*v, 'f', 0, 64) + "ms"
}

// share renders part/total as a percentage; "-" without requests.
func share(part, total float64) string {
	if total <= 0 {
		return "-"
	}
	return strconv.FormatFloat(part/total*100, 'f', 1, 64) + "%"
}

func perSec(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func bytesRate(v float64) string {
	switch {
	case v >= 1<<20:
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + "MiB/s"
	case v >= 1<<10:
		return strconv.FormatFloat(v/(1<<10), 'f', 1, 64) + "KiB/s"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + "B/s"
}
