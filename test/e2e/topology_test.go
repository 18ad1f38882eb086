package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// The two ways traffic reaches the proxies.
const (
	explicitMode    = "explicit"
	transparentMode = "transparent"
)

// Fixed ports of the proxies inside the transparent namespaces.
const (
	nsInboundPort  = 4143
	nsOutboundPort = 4140
	nsAdminPort    = 4191
)

// Addresses of the veth pair between the transparent namespaces.
const (
	nsAddrA = "10.213.0.1"
	nsAddrB = "10.213.0.2"
)

// detectTimeout shortens protocol detection so opaque fallback is quick.
const detectTimeout = "1s"

// backend is one server a test runs behind the proxies.
type backend struct {
	name string
	// port is the server's port in transparent mode; explicit mode uses a
	// free one.
	port int
	// opaque puts the server on an opaque port: no protocol detection.
	opaque bool
}

var (
	webBackend   = backend{name: "web", port: 8080}
	grpcBackend  = backend{name: "grpc", port: 9090}
	echoBackend  = backend{name: "echo", port: 7000}
	redisBackend = backend{name: "redis", port: 6379, opaque: true}
)

// topology is client → A → B → server for a set of backends, in one mode.
type topology struct {
	mode     string
	nsA, nsB string // transparent mode only
	// dialer is what clients dial with (from namespace A in transparent mode).
	dialer *NetNSDialer
	a      *proxyProc
	b      map[string]*proxyProc // the inbound proxy in front of each backend
	ln     map[string]net.Listener
	// addr is what a client dials to reach a backend.
	addr map[string]string
	// targetA and targetB are the target_addr metric labels of a backend's
	// traffic on A and on B.
	targetA, targetB map[string]string

	proxies   []*proxyProc
	netns     []string                     // namespaces created
	natBefore map[string]map[string]string // namespace → save command → rules
	initRan   []string
}

// forEachMode runs fn as the subtests "explicit" and "transparent".
func forEachMode(t *testing.T, fn func(t *testing.T, mode string)) {
	t.Run(explicitMode, func(t *testing.T) { fn(t, explicitMode) })
	t.Run(transparentMode, func(t *testing.T) { fn(t, transparentMode) })
}

// newTopology starts the proxies in front of the backends and returns it with
// a listener per backend, on which the test serves. Everything is torn down
// when the test ends.
func newTopology(t *testing.T, mode string, backends ...backend) *topology {
	t.Helper()
	tp := &topology{
		mode: mode, dialer: &NetNSDialer{}, b: map[string]*proxyProc{}, ln: map[string]net.Listener{},
		addr: map[string]string{}, targetA: map[string]string{}, targetB: map[string]string{},
		natBefore: map[string]map[string]string{},
	}
	if mode == transparentMode {
		requireTransparent(t)
	}
	t.Cleanup(func() { tp.teardown(t) })
	if mode == explicitMode {
		tp.startExplicit(t, backends)
	} else {
		tp.startTransparent(t, backends)
	}
	return tp
}

// requireTransparent skips the test where transparent mode cannot run and
// fails it where the proxy lacks what it needs.
func requireTransparent(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("transparent mode needs root")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("transparent mode needs %s: %v", tool, err)
		}
	}
	if initMissing != "" {
		t.Skip("init subcommand not built yet: " + initMissing)
	}
}

func defaultOpaquePorts(extra ...int) string {
	var ports []string
	for _, p := range config.DefaultOpaquePorts {
		ports = append(ports, strconv.Itoa(int(p)))
	}
	for _, p := range extra {
		ports = append(ports, strconv.Itoa(p))
	}
	return "--opaque-ports=" + strings.Join(ports, ",")
}

func commonArgs() []string {
	return []string{"--detect-timeout=" + detectTimeout, "--shutdown-grace-period=1s", "--log-format=text"}
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// startExplicit runs one B per backend (each forwards to one app address)
// and one A with an --upstream per backend.
func (tp *topology) startExplicit(t *testing.T, backends []backend) {
	t.Helper()
	var upstreams []string
	var opaqueB []int
	for _, be := range backends {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tp.ln[be.name] = ln
		appPort := ln.Addr().(*net.TCPAddr).Port
		in, admin := freePort(t), freePort(t)
		args := append(commonArgs(), "--inbound-addr="+loopback(in), "--outbound-addr="+loopback(freePort(t)),
			"--admin-addr="+loopback(admin), "--app-addr="+ln.Addr().String())
		if be.opaque {
			args = append(args, defaultOpaquePorts(appPort))
			opaqueB = append(opaqueB, in)
		}
		tp.b[be.name] = tp.start(t, "B-"+be.name, "", loopback(admin), args...)
		local := freePort(t)
		upstreams = append(upstreams, fmt.Sprintf("--upstream=%s=%d:%s", be.name, local, loopback(in)))
		tp.addr[be.name] = loopback(local)
		tp.targetA[be.name] = loopback(in)
		tp.targetB[be.name] = ln.Addr().String()
	}
	admin := freePort(t)
	args := append(commonArgs(), "--inbound-addr="+loopback(freePort(t)), "--outbound-addr="+loopback(freePort(t)),
		"--admin-addr="+loopback(admin), defaultOpaquePorts(opaqueB...))
	tp.a = tp.start(t, "A", "", loopback(admin), append(args, upstreams...)...)
}

// startTransparent makes namespaces A and B joined by a veth pair, runs
// init and a proxy (as proxyUID) in each, and listens for the backends in B.
func (tp *topology) startTransparent(t *testing.T, backends []backend) {
	t.Helper()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tp.nsA = "e2e-topo-a-" + hex.EncodeToString(suffix)
	tp.nsB = "e2e-topo-b-" + hex.EncodeToString(suffix)
	for _, ns := range []string{tp.nsA, tp.nsB} {
		mustCmd(t, "ip", "netns", "add", ns)
		tp.netns = append(tp.netns, ns)
	}
	mustCmd(t, "ip", "-n", tp.nsA, "link", "add", "e2e-a", "type", "veth", "peer", "name", "e2e-b", "netns", tp.nsB)
	for _, c := range [][]string{
		{tp.nsA, "addr", "add", nsAddrA + "/24", "dev", "e2e-a"},
		{tp.nsB, "addr", "add", nsAddrB + "/24", "dev", "e2e-b"},
		{tp.nsA, "link", "set", "lo", "up"}, {tp.nsA, "link", "set", "e2e-a", "up"},
		{tp.nsB, "link", "set", "lo", "up"}, {tp.nsB, "link", "set", "e2e-b", "up"},
	} {
		mustCmd(t, "ip", append([]string{"-n"}, c...)...)
	}
	for _, ns := range []string{tp.nsA, tp.nsB} {
		tp.natBefore[ns] = natRules(t, ns)
	}
	for _, ns := range []string{tp.nsA, tp.nsB} {
		tp.initRan = append(tp.initRan, ns)
		mustCmd(t, "ip", "netns", "exec", ns, proxyBin, "init",
			"--inbound-port="+strconv.Itoa(nsInboundPort), "--outbound-port="+strconv.Itoa(nsOutboundPort),
			"--proxy-uid="+strconv.Itoa(proxyUID))
	}
	for _, be := range backends {
		ln, err := ListenInNetNS(tp.nsB, "tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(be.port)))
		if err != nil {
			t.Fatalf("listening for %s in %s: %v", be.name, tp.nsB, err)
		}
		tp.ln[be.name] = ln
		addr := net.JoinHostPort(nsAddrB, strconv.Itoa(be.port))
		tp.addr[be.name], tp.targetA[be.name], tp.targetB[be.name] = addr, addr, addr
	}
	args := append(commonArgs(), "--inbound-addr=0.0.0.0:"+strconv.Itoa(nsInboundPort),
		"--outbound-addr=127.0.0.1:"+strconv.Itoa(nsOutboundPort), "--admin-addr=0.0.0.0:"+strconv.Itoa(nsAdminPort))
	admin := loopback(nsAdminPort)
	tp.a = tp.start(t, "A", tp.nsA, admin, args...)
	b := tp.start(t, "B", tp.nsB, admin, args...)
	for _, be := range backends {
		tp.b[be.name] = b
	}
	tp.dialer = &NetNSDialer{NetNS: tp.nsA}
}

func (tp *topology) start(t *testing.T, name, netns, admin string, args ...string) *proxyProc {
	t.Helper()
	p := startProxy(t, name, netns, admin, args...)
	tp.proxies = append(tp.proxies, p)
	return p
}

// teardown undoes init (asserting the nat table is as before), stops the
// proxies, closes the listeners and deletes the namespaces.
func (tp *topology) teardown(t *testing.T) {
	for _, ns := range tp.initRan {
		out, err := exec.Command("ip", "netns", "exec", ns, proxyBin, "init", "--cleanup",
			"--inbound-port="+strconv.Itoa(nsInboundPort), "--outbound-port="+strconv.Itoa(nsOutboundPort),
			"--proxy-uid="+strconv.Itoa(proxyUID)).CombinedOutput()
		if err != nil {
			t.Errorf("init --cleanup in %s: %v\n%s", ns, err, out)
		}
	}
	for _, ns := range tp.netns {
		before, ok := tp.natBefore[ns]
		if !ok {
			continue
		}
		after := natRules(t, ns)
		for tool, rules := range before {
			if after[tool] != rules {
				t.Errorf("after init --cleanup, `%s -t nat` in %s differs from before init:\nbefore:\n%s\nafter:\n%s", tool, ns, rules, after[tool])
			}
		}
	}
	for i := len(tp.proxies) - 1; i >= 0; i-- {
		tp.proxies[i].stop(t)
	}
	for _, ln := range tp.ln {
		ln.Close()
	}
	for _, ns := range tp.netns {
		// Deleting the namespace also deletes the veth end inside it.
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	}
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// natRules returns, per installed iptables save command, the nat table of
// namespace ns without comments and packet counters.
func natRules(t *testing.T, ns string) map[string]string {
	t.Helper()
	rules := map[string]string{}
	for _, tool := range []string{"iptables-save", "iptables-nft-save", "iptables-legacy-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		out, err := exec.Command("ip", "netns", "exec", ns, tool, "-t", "nat").Output()
		if err != nil {
			t.Fatalf("%s -t nat in %s: %v", tool, ns, err)
		}
		var b strings.Builder
		for _, line := range strings.SplitAfter(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "[0:0]"))
			}
		}
		rules[tool] = b.String()
	}
	return rules
}

func mustCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// url is http://<what the client dials for be><path>.
func (tp *topology) url(be backend, path string) string {
	return "http://" + tp.addr[be.name] + path
}

// httpClient is an HTTP/1.1 client dialing like the topology's clients.
func (tp *topology) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:        tp.dialer.DialContext,
		Proxy:              nil,
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}}
}

// curlCmd is curl with args, run in namespace A in transparent mode. curl's
// config file and proxy environment are ignored.
func (tp *topology) curlCmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{"curl", "-q", "--noproxy", "*", "-sS", "--max-time", "30"}, args...)
	if tp.mode == transparentMode {
		argv = append([]string{"ip", "netns", "exec", tp.nsA}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// curlResult is what one curl run received.
type curlResult struct {
	heads    []respHead // every response head, 1xx included, in order
	trailers http.Header
	body     []byte
}

// final is the final response head.
func (r curlResult) final() respHead { return r.heads[len(r.heads)-1] }

// respHead is one response head as curl dumped it.
type respHead struct {
	proto  string
	status int
	header http.Header
}

// curl runs curl with args (which name the URL), dumping the response heads
// and body to files, and parses what it received.
func (tp *topology) curl(t *testing.T, args ...string) curlResult {
	t.Helper()
	dir := t.TempDir()
	heads, body := filepath.Join(dir, "heads"), filepath.Join(dir, "body")
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	cmd := tp.curlCmd(ctx, append([]string{"-D", heads, "-o", body}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	h, err := os.ReadFile(heads)
	if err != nil {
		t.Fatal(err)
	}
	res := parseHeads(t, string(h))
	if res.body, err = os.ReadFile(body); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return res
}

// parseHeads parses curl's -D dump: heads separated by blank lines, and any
// trailer fields curl appends after the last head.
func parseHeads(t *testing.T, dump string) curlResult {
	t.Helper()
	var res curlResult
	var cur *respHead
	for _, line := range strings.Split(dump, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "HTTP/"):
			f := strings.Fields(line)
			if len(f) < 2 {
				t.Fatalf("bad status line %q in\n%s", line, dump)
			}
			code, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("bad status line %q in\n%s", line, dump)
			}
			res.heads = append(res.heads, respHead{proto: f[0], status: code, header: http.Header{}})
			cur = &res.heads[len(res.heads)-1]
		case line == "":
			cur = nil
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("bad header line %q in\n%s", line, dump)
			}
			if cur != nil {
				cur.header.Add(k, strings.TrimSpace(v))
			} else {
				if res.trailers == nil {
					res.trailers = http.Header{}
				}
				res.trailers.Add(k, strings.TrimSpace(v))
			}
		}
	}
	if len(res.heads) == 0 {
		t.Fatalf("no response head in curl's dump:\n%s", dump)
	}
	return res
}

// through snapshots metric on A (outbound) and on B (inbound) for the
// backend's traffic; the check it returns fails the test unless both grew,
// which proves the traffic crossed both proxies.
func (tp *topology) through(t *testing.T, be backend, metric string, labels ...string) (check func()) {
	t.Helper()
	la := append([]string{`direction="outbound"`, `target_addr="` + tp.targetA[be.name] + `"`}, labels...)
	lb := append([]string{`direction="inbound"`, `target_addr="` + tp.targetB[be.name] + `"`}, labels...)
	a0 := sumSeries(tp.a.metrics(t), metric, la...)
	b0 := sumSeries(tp.b[be.name].metrics(t), metric, lb...)
	return func() {
		t.Helper()
		if a1 := sumSeries(tp.a.metrics(t), metric, la...); a1 <= a0 {
			t.Errorf("traffic to %s did not cross proxy A: %s{%s} stayed at %v", be.name, metric, strings.Join(la, ","), a1)
		}
		if b1 := sumSeries(tp.b[be.name].metrics(t), metric, lb...); b1 <= b0 {
			t.Errorf("traffic to %s did not cross proxy B: %s{%s} stayed at %v", be.name, metric, strings.Join(lb, ","), b1)
		}
	}
}
