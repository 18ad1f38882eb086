// Package demo runs `trellis demo`: a local control plane, the sample
// application (internal/demo/services: web → emoji and voting over gRPC,
// and a traffic generator calling web), every service meshed with mTLS by
// its own proxy, as root each in its own network namespace. It prints what
// to try next and tears everything down when its context ends.
package demo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/local/netns"
	"github.com/trellis-mesh/trellis/internal/local/run"
)

// Options tune the demo.
type Options struct {
	// RPS is how many requests a second the traffic generator sends to web.
	RPS int
	// FailRate is the share of votes the voting service fails.
	FailRate float64
	// Network is up's --network: auto (namespaces when root), bridge or none.
	Network string
	// Bridge is up's --bridge and --network-cidr.
	Bridge netns.BridgeNetwork
	// PrometheusURL, if set, is the Prometheus server the metrics API
	// queries; otherwise the embedded store scrapes the proxies every
	// ScrapeInterval (the control plane's default if zero).
	PrometheusURL  string
	ScrapeInterval time.Duration
	// Exe is the trellis binary that runs the apps (trellis demo-app),
	// ProxyExe the trellis-proxy binary of every proxy, ControlExe the
	// trellis-control binary of the control plane.
	Exe, ProxyExe, ControlExe string
	Out, Err                  io.Writer
	// Log logs what the demo does, at LogLevel, which the control plane
	// logs at too.
	Log      *slog.Logger
	LogLevel string
	// Started, if set, receives the running demo's description.
	Started func(Info)
}

// Info describes a running demo.
type Info struct {
	DataDir string
	// Instances maps each replica (web-0, emoji-1, ...) to its proxy's admin address.
	Instances map[string]string
	// WebURL reaches the web front end (through its proxy in transparent mode).
	WebURL string
	// DashboardURL is the control plane's dashboard.
	DashboardURL string
}

// service is one program of the sample application.
type service struct {
	name      string
	replicas  int
	protocol  string
	upstreams []string // names of services it calls
	args      []string // after "demo-app NAME"
}

// Run starts the demo and blocks until ctx ends, then removes everything.
func Run(ctx context.Context, o Options) (err error) {
	dir, err := os.MkdirTemp("", "trellis-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, plane, err := startPlane(ctx, o, dir)
	if err != nil {
		return err
	}
	defer func() {
		if perr := plane.Stop(); perr != nil && err == nil {
			err = perr
		}
	}()
	transparent := st.Network != ""

	ports := map[string]int{}
	services := []service{
		{name: "emoji", replicas: 2, protocol: "grpc", args: []string{"--listen", "$LISTEN_ADDR"}},
		{name: "voting", replicas: 1, protocol: "grpc", args: []string{"--listen", "$LISTEN_ADDR", "--fail-rate", strconv.FormatFloat(o.FailRate, 'f', -1, 64)}},
		{name: "web", replicas: 1, protocol: "http", upstreams: []string{"emoji", "voting"},
			args: []string{"--listen", "$LISTEN_ADDR", "--emoji-addr", "$EMOJI_ADDR", "--voting-addr", "$VOTING_ADDR"}},
		{name: "traffic", replicas: 1, protocol: "http", upstreams: []string{"web"},
			args: []string{"--listen", "$LISTEN_ADDR", "--web-url", "http://$WEB_ADDR", "--rps", strconv.Itoa(o.RPS)}},
	}
	if !transparent {
		// Below Linux's ephemeral ports, which proxies' free ports come from,
		// and Kubernetes' NodePorts (30000 and up), which kube-proxy's rules
		// take on every local address.
		if ports, err = loopbackPorts(services, func() int { return 20000 + rand.IntN(10000) }); err != nil {
			return err
		}
	} else {
		for _, s := range services {
			ports[s.name] = 8080 // each instance has an address of its own
		}
	}
	var sets []*run.Set
	defer func() {
		for i := len(sets) - 1; i >= 0; i-- {
			sets[i].Stop()
		}
	}()
	info := Info{DataDir: dir, Instances: map[string]string{}, DashboardURL: st.DashboardURL}
	for _, s := range services {
		ro := run.Options{Name: s.name, Port: ports[s.name], Protocol: s.protocol, Replicas: s.replicas,
			Command: append([]string{o.Exe, "demo-app", s.name}, s.args...), DataDir: dir, ProxyExe: o.ProxyExe,
			ProxyLogLevel: "warn", Out: io.Discard, Err: o.Err, Log: o.Log}
		if s.name == "traffic" {
			ro.Out = o.Out
		}
		for _, u := range s.upstreams {
			ro.Upstreams = append(ro.Upstreams, run.Upstream{Name: u, Port: ports[u]})
		}
		set, err := run.Start(ctx, ro)
		if err != nil {
			return fmt.Errorf("starting %s: %w", s.name, err)
		}
		sets = append(sets, set)
		for name, admin := range set.Instances() {
			info.Instances[name] = admin
		}
		if s.name == "web" {
			host, _, _ := net.SplitHostPort(set.Instances()["web-0"])
			info.WebURL = "http://" + net.JoinHostPort(host, strconv.Itoa(ports["web"]))
		}
	}
	waitErr := make(chan error, len(sets))
	for _, s := range sets {
		go func() { waitErr <- s.Wait(ctx) }()
	}
	// ended waits for the demo to end — Ctrl-C (no error), or a process of
	// it stopping — or for also to deliver: done unless that is nil.
	ended := func(also <-chan error) (done bool, err error) {
		select {
		case <-ctx.Done():
			return true, nil
		case <-plane.Done():
			return true, fmt.Errorf("the control plane stopped: %v", plane.Err())
		case err := <-waitErr:
			return true, cmp.Or(err, errors.New("a demo service stopped"))
		case err := <-also:
			if ctx.Err() != nil {
				return true, nil
			}
			return err != nil, err
		}
	}
	// It runs once its front end answers — or it ends before.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- waitFrontEnd(wctx, info.WebURL+"/api/list") }()
	if done, err := ended(ready); done {
		return err
	}
	mode := "explicit mode (not root): proxies on loopback ports, apps told where to send traffic"
	if transparent {
		mode = "transparent mode: each instance in its own network namespace, traffic intercepted by iptables"
	}
	fmt.Fprintf(o.Out, `
Trellis demo is running — %s.

  traffic → web → emoji (2 replicas) and voting, every hop mTLS between proxies

  the dashboard:        %s
  the front end:        curl %s/api/list
  the mesh's view:      TRELLIS_DATA_DIR=%s trellis get workloads
                        TRELLIS_DATA_DIR=%s trellis get services
  a proxy's metrics:    curl http://%s/metrics
  golden metrics:       TRELLIS_DATA_DIR=%[4]s trellis stat workloads
                        TRELLIS_DATA_DIR=%[4]s trellis edges
  live requests:        TRELLIS_DATA_DIR=%[4]s trellis tap workload/web
                        TRELLIS_DATA_DIR=%[4]s trellis top workload/web
  each request's path:  TRELLIS_DATA_DIR=%[4]s trellis explain web
                        (route, endpoint, retries, the policy that let it in)

Press Ctrl-C to stop; everything it started is removed.

`, mode, info.DashboardURL, info.WebURL, dir, dir, info.Instances["web-0"])
	if o.Started != nil {
		o.Started(info)
	}
	_, err = ended(nil)
	return err
}

// frontEndWait bounds waiting for the front end to answer once everything
// started: the applications start after their proxies, and a slow machine
// takes a while to start them.
const frontEndWait = 60 * time.Second

// waitFrontEnd waits until url (the web front end, which calls emoji over
// the mesh) answers 200, so that the demo says it runs once the curl it
// prints works.
func waitFrontEnd(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}} // (never the user's HTTP_PROXY)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(frontEndWait)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the web front end did not answer within %v (GET %s: %v)", frontEndWait, url, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startPlane runs the control plane, trellis-control up, on the data
// directory dir and waits until it serves.
func startPlane(ctx context.Context, o Options, dir string) (localapi.Status, *localapi.Process, error) {
	args := append([]string{"up", "--data-dir", dir, "--admin-addr", "127.0.0.1:0", "--control-port", "0", "--web-addr", "127.0.0.1:0",
		"--lease-ttl", "3s", "--network", o.Network, "--log-level", cmp.Or(o.LogLevel, "warn"), "--log-format", "text"},
		o.Bridge.Args()...)
	if o.ScrapeInterval > 0 {
		args = append(args, "--metrics-scrape-interval", o.ScrapeInterval.String())
	}
	if o.PrometheusURL != "" {
		args = append(args, "--prometheus-url", o.PrometheusURL)
	}
	cmd := exec.Command(o.ControlExe, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, o.Err // the demo says what runs where
	// Its own process group, so the terminal's Ctrl-C reaches only the
	// demo, which stops the instances before the control plane; SIGTERM
	// if the demo dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	return localapi.Launch(ctx, cmd, dir, 60*time.Second, "its log above")
}

// loopbackPorts picks each service's application ports on loopback for
// explicit mode: a run of free ports per service (one per replica),
// starting where pick says. Every port tried stays bound until all are
// chosen, so no two services get the same port (probing and releasing one
// service's ports before the next picked let two services share one).
func loopbackPorts(services []service, pick func() int) (map[string]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	ports := map[string]int{}
	for _, s := range services {
		for try := 0; ; try++ {
			if try == 100 {
				return nil, errors.New("no free loopback ports for the demo")
			}
			p := pick()
			var ls []net.Listener
			for i := range s.replicas {
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
				if err != nil {
					break
				}
				ls = append(ls, l)
			}
			held = append(held, ls...)
			if len(ls) == s.replicas {
				ports[s.name] = p
				break
			}
		}
	}
	return ports, nil
}
