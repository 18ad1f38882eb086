// Command observe measures what observability costs the proxies: CPU per
// request of a client proxy and a server proxy (two trellis-proxy
// processes, mTLS between them, keep-alive HTTP/1.1 from 8 clients) with
// the per-request HTTP metrics on and off, and with tap idle and active
// (a `trellis tap` of the server's workload streaming through the control
// plane). All scenarios run in the same run against the same control
// plane, interleaved over several rounds; CPU is the two proxy processes'
// user + system time from /proc, so the load generator, the backend and
// the tap's consumer are not counted. With taskset (util-linux) the
// proxies run on one CPU and everything else on another (-cpus).
//
//	go run ./bench/observe                 # 5 rounds of 20,000 requests per scenario
//	go run ./bench/observe -rounds 9 -requests 40000 -cpus 0,1
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

func main() {
	rounds := flag.Int("rounds", 5, "rounds; each runs every scenario once, and the table gives medians")
	cpus := flag.String("cpus", "0,1", "GEN,SUT: the CPU of the load generator, backend and control plane, and the CPU of the proxies (needs taskset; empty: no pinning)")
	requests := flag.Int("requests", 20000, "requests per scenario and round")
	trellis := flag.String("trellis", "", "trellis binary, with trellis-proxy beside it (default: go build both)")
	flag.Parse()
	if *rounds < 1 || *requests < 1000 {
		fatalf("need -rounds >= 1 and -requests >= 1000")
	}
	sut := pin(*cpus)
	dir, err := os.MkdirTemp("", "trellis-bench-observe-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	if *trellis == "" {
		*trellis = filepath.Join(dir, "trellis")
		log.Printf("building trellis, trellis-proxy and trellis-control")
		if out, err := exec.Command("go", "build", "-o", dir+"/", "./cmd/trellis", "./cmd/trellis-proxy", "./cmd/trellis-control").CombinedOutput(); err != nil {
			fatalf("go build: %v\n%s", err, out)
		}
	}
	b := &bench{exe: *trellis, proxy: filepath.Join(filepath.Dir(*trellis), "trellis-proxy"), dir: dir, sutCPU: sut}
	defer stopAll()
	b.startControlPlane()
	backend := b.startBackend()
	withMetrics := b.startPair("on", backend)
	noMetrics := b.startPair("off", backend, "--disable-http-metrics")

	type scenario struct {
		name string
		pair *pair
		tap  bool
	}
	scenarios := []scenario{
		{"HTTP metrics off", noMetrics, false},
		{"HTTP metrics on, tap idle (the default)", withMetrics, false},
		{"HTTP metrics on, tap active", withMetrics, true},
	}
	cpu := map[string][]float64{}
	for r := range *rounds {
		for _, s := range scenarios {
			var stopTap func()
			if s.tap {
				stopTap = b.tap(s.pair.workload)
			}
			us := b.load(s.pair, *requests)
			if stopTap != nil {
				stopTap()
			}
			cpu[s.name] = append(cpu[s.name], us)
			log.Printf("round %d: %s: %.1f µs/request", r+1, s.name, us)
		}
	}
	med := func(name string) float64 {
		v := slices.Clone(cpu[name])
		slices.Sort(v)
		return v[len(v)/2]
	}
	off, idle, active := med(scenarios[0].name), med(scenarios[1].name), med(scenarios[2].name)
	fmt.Printf("\n### Observability: proxy CPU per request (client proxy + server proxy)\n\n")
	fmt.Printf("| scenario | CPU per request (median of %d) | ratio |\n|---|---|---|\n", *rounds)
	fmt.Printf("| %s (baseline) | %.1f µs | 1.00× |\n", scenarios[0].name, off)
	fmt.Printf("| %s | %.1f µs | %.2f× vs. metrics off |\n", scenarios[1].name, idle, idle/off)
	fmt.Printf("| %s | %.1f µs | %.2f× vs. tap idle |\n", scenarios[2].name, active, active/idle)
	fmt.Printf("\n%d requests per scenario and round, 8 keep-alive HTTP/1.1 clients, 2 B responses; the tap reports at most 100 requests/s (the proxy's default cap). Per-round values: ", *requests)
	for i, s := range scenarios {
		if i > 0 {
			fmt.Print("; ")
		}
		fmt.Printf("%s %s", s.name, strings.Trim(fmt.Sprintf("%.0f", cpu[s.name]), "[]"))
	}
	fmt.Println(" µs.")
}

type bench struct {
	exe, proxy, dir string // trellis, trellis-proxy, the work directory
	sutCPU          string // the proxies' CPU, "" unpinned
	api             *localapi.Client
	st              localapi.Status
}

// procs are the processes the bench started, stopped on every exit.
var procs []*exec.Cmd

func stopAll() {
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Process.Kill()
		procs[i].Wait()
	}
	procs = nil
}

// fatalf stops every process the bench started, then exits.
func fatalf(format string, args ...any) {
	stopAll()
	log.Fatalf(format, args...)
}

func (b *bench) start(args ...string) *exec.Cmd {
	cmd := exec.Command(b.exe, args...)
	if args[0] == "proxy" {
		cmd = exec.Command(b.proxy, args[1:]...)
		if b.sutCPU != "" {
			cmd = exec.Command("taskset", append([]string{"-c", b.sutCPU, b.proxy}, args[1:]...)...)
		}
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fatalf("%v", err)
	}
	procs = append(procs, cmd)
	return cmd
}

func (b *bench) startControlPlane() {
	data := filepath.Join(b.dir, "data")
	b.start("--data-dir", data, "up", "--network", "none", "--control-port", "0", "--admin-addr", freeAddr())
	b.api = localapi.NewClient(filepath.Join(data, localapi.SocketName))
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		st, err := b.api.Status(context.Background())
		if err == nil {
			b.st = st
			return
		}
		if time.Since(start) > 30*time.Second {
			fatalf("the control plane did not start: %v", err)
		}
	}
}

// startBackend serves "ok" on loopback and returns its address.
func (b *bench) startBackend() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	return ln.Addr().String()
}

// pair is a client proxy whose upstream port reaches the backend through
// a server proxy over mTLS; the server is a registered workload (so it
// can be tapped).
type pair struct {
	workload       string
	url            string
	client, server *exec.Cmd
}

// proxyArgs are the flags joining a proxy to the mesh as service account sa.
func (b *bench) proxyArgs(sa string) []string {
	id := "spiffe://cluster.local/ns/default/sa/" + sa
	tok, err := b.api.JoinToken(context.Background(), id, time.Hour, false)
	if err != nil {
		fatalf("%v", err)
	}
	file := filepath.Join(b.dir, sa+".token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		fatalf("%v", err)
	}
	return []string{"proxy", "--identity=" + id, "--identity-addr=" + b.st.ControlAddr, "--identity-token-file=" + file,
		"--trust-anchors=" + b.st.TrustAnchor, "--destination-addr=" + b.st.ControlAddr, "--log-level=warn",
		"--outbound-addr=" + freeAddr(), "--admin-addr=" + freeAddr(), "--tap-addr=127.0.0.1:0"}
}

func (b *bench) startPair(name, backend string, extra ...string) *pair {
	_, appPort, _ := net.SplitHostPort(backend)
	inbound := freeAddr()
	_, inPort, _ := net.SplitHostPort(inbound)
	p := &pair{workload: "bench-" + name}
	server := append(b.proxyArgs(p.workload), "--inbound-addr="+inbound, "--app-addr="+backend,
		"--workload="+p.workload+"-0", "--service="+p.workload, "--service-port=8080="+appPort)
	p.server = b.start(append(server, extra...)...)
	local := freeAddr()
	_, lport, _ := net.SplitHostPort(local)
	client := append(b.proxyArgs("client-"+name), "--inbound-addr="+freeAddr(), "--mesh-port="+inPort,
		"--upstream=up="+lport+":"+backend+"@spiffe://cluster.local/ns/default/sa/"+p.workload)
	p.client = b.start(append(client, extra...)...)
	p.url = "http://" + local + "/"
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(p.url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 30*time.Second {
			fatalf("pair %s: not answering 200 within 30s", name)
		}
	}
	// Registered, so that tap finds the server.
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := b.api.Get(context.Background(), workloadKey(p.workload+"-0")); err == nil {
			return p
		}
		if time.Since(start) > 30*time.Second {
			fatalf("pair %s: the server did not register within 30s", name)
		}
	}
}

// pin runs this process on the generator's CPU (re-executing itself under
// taskset) and returns the proxies' CPU; "" when cpus is empty.
func pin(cpus string) string {
	if cpus == "" {
		return ""
	}
	gen, sut, ok := strings.Cut(cpus, ",")
	if !ok || gen == "" || sut == "" {
		fatalf("-cpus %q: want GEN,SUT, e.g. 0,1", cpus)
	}
	if os.Getenv("TRELLIS_BENCH_PINNED") == "" {
		cmd := exec.Command("taskset", append([]string{"-c", gen}, os.Args...)...)
		cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stderr, append(os.Environ(), "TRELLIS_BENCH_PINNED=1")
		if err := cmd.Run(); err != nil {
			if _, ok := err.(*exec.ExitError); ok {
				os.Exit(1)
			}
			fatalf("taskset: %v (install util-linux, or give -cpus '')", err)
		}
		os.Exit(0)
	}
	return sut
}

// tap streams the tap of the workload's service until the returned function is called.
func (b *bench) tap(workload string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	body, err := b.api.Stream(ctx, "/v1/tap?target=service/"+workload+"&namespace=default")
	if err != nil {
		fatalf("tap: %v", err)
	}
	done := make(chan int)
	go func() {
		n := 0 // requests tapped
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"type":"requestInit"`) {
				n++
			}
		}
		done <- n
	}()
	return func() {
		cancel()
		body.Close()
		if n := <-done; n == 0 {
			fatalf("the tap streamed no requests")
		}
	}
}

// load sends n requests through the pair from 8 keep-alive clients and
// returns the two proxies' CPU per request in µs.
func (b *bench) load(p *pair, n int) float64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func() {
		resp, err := client.Get(p.url)
		if err != nil {
			fatalf("%v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			fatalf("%s: %s", p.url, resp.Status)
		}
	}
	for range 500 { // warm up
		get()
	}
	before := cpuTicks(p.client.Process.Pid) + cpuTicks(p.server.Process.Pid)
	var wg sync.WaitGroup
	per := n / 8
	for range 8 {
		wg.Go(func() {
			for range per {
				get()
			}
		})
	}
	wg.Wait()
	ticks := cpuTicks(p.client.Process.Pid) + cpuTicks(p.server.Process.Pid) - before
	client.CloseIdleConnections()
	return float64(ticks) * 1e6 / clockTicks / float64(per*8)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times (100 on Linux).
const clockTicks = 100

// cpuTicks is a process's user + system time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		fatalf("%v", err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func workloadKey(name string) store.Key {
	return store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: name}
}
