package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/trellis-mesh/trellis/internal/control/tap"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// tapFlags select the requests of a tap or top.
type tapFlags struct {
	namespace, method, path, authority, to string
	maxRPS                                 int
	duration                               time.Duration
}

func (f *tapFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "default", "namespace of the target")
	cmd.Flags().StringVar(&f.method, "method", "", "only requests with this HTTP method")
	cmd.Flags().StringVar(&f.path, "path", "", "only requests whose path starts with this")
	cmd.Flags().StringVar(&f.authority, "authority", "", "only requests to this authority (host:port)")
	cmd.Flags().StringVar(&f.to, "to", "", "only requests the target sends to this destination (service or authority)")
	cmd.Flags().IntVar(&f.maxRPS, "max-rps", 100, "most requests per second each proxy reports (the proxy caps it too)")
	cmd.Flags().DurationVar(&f.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
}

// stream opens the tap of target (KIND/NAME) and calls each with every
// event until the stream, or f.duration, ends.
func (f *tapFlags) stream(ctx context.Context, t *target, target string, each func(tap.Event)) error {
	if !strings.Contains(target, "/") {
		return fmt.Errorf("%q: give the target as KIND/NAME, e.g. workload/web, service/web or pod/web-0", target)
	}
	if f.maxRPS < 1 {
		return fmt.Errorf("--max-rps %d: must be at least 1", f.maxRPS)
	}
	if f.duration < 0 {
		return fmt.Errorf("--duration %v: must not be negative (0: until Ctrl-C)", f.duration)
	}
	q := url.Values{"target": {target}, "namespace": {f.namespace}, "max_rps": {strconv.Itoa(f.maxRPS)}}
	for k, v := range map[string]string{"method": f.method, "path": f.path, "authority": f.authority, "to": f.to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	api, done, err := t.api(ctx)
	if err != nil {
		return err
	}
	defer done()
	body, err := api.Stream(ctx, "/v1/tap?"+q.Encode())
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var failed []string // proxies that could not be tapped
	events := 0
	for sc.Scan() {
		var ev tap.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("tap stream: %w", err)
		}
		if ev.Type == tap.TypeError {
			failed = append(failed, ev.Workload+": "+ev.Error)
		} else {
			events++
		}
		each(ev)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("tap stream: %w", err)
	}
	if events == 0 && len(failed) > 0 {
		return fmt.Errorf("no proxy of %s could be tapped: %s", target, strings.Join(failed, "; "))
	}
	return nil
}

func tapCmd(t *target) *cobra.Command {
	var f tapFlags
	var output string
	cmd := &cobra.Command{
		Use:   "tap KIND/NAME",
		Short: "Watch the requests of a workload, service, namespace or instance live",
		Long: `tap streams the requests the target's proxies handle, as they happen: a
req line when a request arrives, rsp when its response head goes out
(with the time it took), end when the response is complete (with its gRPC
status, duration and size) — from each proxy the target has, inbound and
outbound. The control plane taps the proxies over mutual TLS; each proxy
reports at most --max-rps requests a second. -o json prints each event as
one JSON object per line.`,
		Example: `  trellis tap workload/web
  trellis tap svc/voting --method POST -o json
  trellis tap pod/web-0 --path /api --duration 10s`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "wide" {
				return fmt.Errorf("-o %q: must be json or wide (or none, for lines)", output)
			}
			out := cmd.OutOrStdout()
			var werr error
			err := f.stream(cmd.Context(), t, args[0], func(ev tap.Event) {
				if werr != nil {
					return
				}
				if output == "json" {
					b, _ := json.Marshal(ev)
					_, werr = fmt.Fprintln(out, string(b))
					return
				}
				_, werr = fmt.Fprintln(out, tapLine(ev, output == "wide"))
			})
			return errors.Join(err, werr)
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json (one event per line) or wide (with identities)")
	return cmd
}

// tapLine renders one event as Linkerd's tap does.
func tapLine(ev tap.Event, wide bool) string {
	proxy := "in "
	if ev.Proxy == "outbound" {
		proxy = "out"
	}
	head := fmt.Sprintf("id=%s:%d proxy=%s src=%s dst=%s tls=%t", ev.Workload, ev.ID, proxy, ev.Source, ev.Destination, ev.TLS)
	if wide {
		head += fmt.Sprintf(" client_id=%s server_id=%s", dash(ev.ClientID), dash(ev.ServerID))
	}
	switch ev.Type {
	case tap.TypeRequestInit:
		return fmt.Sprintf("req %s :method=%s :authority=%s :path=%s", head, ev.Method, ev.Authority, ev.Path)
	case tap.TypeResponseInit:
		return fmt.Sprintf("rsp %s :status=%d latency=%dµs", head, ev.Status, ev.LatencyMicros)
	case tap.TypeResponseEnd:
		line := "end " + head
		if ev.GRPCStatus != nil {
			line += " grpc-status=" + codes.Code(*ev.GRPCStatus).String() // OK, Unavailable, … as Linkerd prints them
		}
		line += fmt.Sprintf(" duration=%dµs response-length=%dB", ev.DurationMicros, ev.Bytes)
		if ev.Error != "" {
			line += " error=" + strconv.Quote(ev.Error)
		}
		return line
	case tap.TypeDropped:
		return fmt.Sprintf("dropped proxy=%s %d events (reading too slowly)", ev.Workload, ev.Dropped)
	case tap.TypeError:
		return fmt.Sprintf("error proxy=%s %s", ev.Workload, ev.Error)
	}
	return ev.Type + " " + head
}

func topCmd(t *target) *cobra.Command {
	var f tapFlags
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "top KIND/NAME",
		Short: "Show the most frequent requests of a target, live",
		Long: `top taps the target (as tap does) and keeps a table of its most frequent
requests by source, destination, method and path: how many, the fastest,
the slowest and the last latency, and the share that succeeded. On a
terminal the table is redrawn every --refresh; otherwise it is printed once
when the tap ends (give --duration).`,
		Example: `  trellis top workload/web
  trellis top svc/web --duration 10s > top.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			table := newTopTable()
			live := isTerminal(out)
			last := time.Now()
			err := f.stream(cmd.Context(), t, args[0], func(ev tap.Event) {
				table.add(ev)
				if live && time.Since(last) >= every {
					last = time.Now()
					fmt.Fprint(out, "\033[H\033[2J")
					table.print(out, 30)
				}
			})
			if live {
				fmt.Fprint(out, "\033[H\033[2J")
			}
			table.print(out, 30)
			return err
		},
	}
	f.bind(cmd)
	cmd.Flags().DurationVar(&every, "refresh", time.Second, "how often the table is redrawn on a terminal")
	return cmd
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// topTable aggregates tap events by source, destination, method and path.
type topTable struct {
	pending map[string]*topRequest // proxy addr + id → request in flight
	rows    map[topKey]*topRow
}

type topKey struct{ source, destination, method, path string }

type topRequest struct {
	key     topKey
	latency time.Duration
	status  int
}

type topRow struct {
	topKey
	count, ok         int
	best, worst, last time.Duration
}

func newTopTable() *topTable {
	return &topTable{pending: map[string]*topRequest{}, rows: map[topKey]*topRow{}}
}

// add takes one event: a request is counted when its response ends.
func (t *topTable) add(ev tap.Event) {
	id := ev.ProxyAddr + "/" + strconv.FormatUint(ev.ID, 10)
	switch ev.Type {
	case tap.TypeRequestInit:
		if len(t.pending) > 10000 { // their ends were dropped
			clear(t.pending)
		}
		src, dst := peerName(ev.Source, ev.ClientID), ev.Workload
		if ev.Proxy == "outbound" {
			src, dst = ev.Workload, peerName(ev.Authority, ev.ServerID)
		}
		t.pending[id] = &topRequest{key: topKey{src, dst, ev.Method, ev.Path}}
	case tap.TypeResponseInit:
		if r := t.pending[id]; r != nil {
			r.latency, r.status = time.Duration(ev.LatencyMicros)*time.Microsecond, ev.Status
		}
	case tap.TypeResponseEnd:
		r := t.pending[id]
		if r == nil {
			return
		}
		delete(t.pending, id)
		row := t.rows[r.key]
		if row == nil {
			row = &topRow{topKey: r.key, best: r.latency, worst: r.latency}
			t.rows[r.key] = row
		}
		row.count++
		if r.status > 0 && r.status < 500 && ev.Error == "" && (ev.GRPCStatus == nil || *ev.GRPCStatus == 0) {
			row.ok++
		}
		row.best, row.worst, row.last = min(row.best, r.latency), max(row.worst, r.latency), r.latency
	}
}

// peerName is a peer's workload name from its identity (the service
// account), else its address.
func peerName(addr, id string) string {
	if parsed, err := identity.Parse(id); err == nil {
		return parsed.ServiceAccount
	}
	return addr
}

// print renders the n most frequent rows.
func (t *topTable) print(w io.Writer, n int) {
	rows := make([]*topRow, 0, len(t.rows))
	for _, r := range t.rows {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].count != rows[j].count {
			return rows[i].count > rows[j].count
		}
		a, b := rows[i].topKey, rows[j].topKey
		if a.source != b.source {
			return a.source < b.source
		}
		if a.destination != b.destination {
			return a.destination < b.destination
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.path < b.path
	})
	if len(rows) > n {
		rows = rows[:n]
	}
	tw := newTable(w)
	defer tw.Flush()
	fmt.Fprintln(tw, "Source\tDestination\tMethod\tPath\tCount\tBest\tWorst\tLast\tSuccess Rate")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.source, r.destination, r.method, r.path, r.count,
			duration(r.best), duration(r.worst), duration(r.last), strconv.FormatFloat(float64(r.ok)/float64(r.count)*100, 'f', 2, 64)+"%")
	}
}

// duration renders a latency as top does: µs below a millisecond, else ms.
func duration(d time.Duration) string {
	if d < time.Millisecond {
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
