package run

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/local/netns"
	"github.com/trellis-mesh/trellis/internal/proxy/iptables"
)

// Ports of a transparent-mode proxy, alone in its namespace.
const (
	inboundPort  = iptables.DefaultInboundPort
	outboundPort = iptables.DefaultOutboundPort
	adminPort    = 4191
	tapPort      = 4190
	// tokenTTL bounds the single-use join token a replica's proxy gets its
	// first certificate with (it renews with the certificate); the file
	// is removed once the proxy is ready.
	tokenTTL = 10 * time.Minute
	// readyTimeout bounds waiting for a proxy to become ready; a wait of
	// readyTell is told (and again at each doubling).
	readyTimeout = 20 * time.Second
	readyTell    = 2 * time.Second
	stopTimeout  = 10 * time.Second
)

// instance is one replica: its proxy, its application and, in transparent
// mode, its network namespace.
type instance struct {
	name        string // web-0
	o           *Options
	st          localapi.Status
	api         *localapi.Client
	transparent bool
	index       int
	user        *appUser // nil: the application keeps trellis's user
	// restarts counts the replica's restarts, lastExit says how it last
	// ended, inARow how many exits in a row led here; started is when it
	// started.
	restarts, inARow int
	lastExit         string
	started          time.Time

	ns       *netns.Namespace
	addr     netip.Addr // the replica's IP
	proxyUID int        // transparent mode: the user its proxy runs as
	dir      string
	admin    string // proxy admin host:port
	appPort  int
	env      []string
	upstream map[string]string // env name -> address
	proxy    *exec.Cmd
	app      *exec.Cmd
	proxyC   chan error
	appC     chan error
	stopOnce sync.Once
}

func (in *instance) identity() string {
	return "spiffe://" + in.st.TrustDomain + "/ns/" + in.o.Namespace + "/sa/" + in.o.Name
}

func (in *instance) key() string { return in.o.Namespace + "/" + in.name }

// start sets the replica up and starts its proxy, waits for it to be
// ready, then starts the application. On error it undoes what it did.
func (in *instance) start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			in.stop()
		}
	}()
	in.dir = filepath.Join(in.o.DataDir, "run", in.o.Namespace+"-"+in.name)
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		return err
	}
	tok, err := in.api.JoinToken(ctx, in.identity(), tokenTTL, true)
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	anchors, err := os.ReadFile(in.st.TrustAnchor)
	if err != nil {
		return fmt.Errorf("trust anchor: %w", err)
	}
	for name, data := range map[string][]byte{"token": []byte(tok), "trust-anchors.pem": anchors} {
		if err := os.WriteFile(filepath.Join(in.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	if in.transparent {
		if err := in.setupNamespace(ctx); err != nil {
			return err
		}
	} else {
		in.setupExplicit()
	}
	if err := in.startProxy(ctx); err != nil {
		return err
	}
	in.started = time.Now()
	return in.startApp()
}

// setupNamespace makes the replica's namespace and interception rules.
func (in *instance) setupNamespace(ctx context.Context) error {
	a, err := in.api.AllocateAddress(ctx, in.key())
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	in.addr = a.Address
	gw, _ := netip.ParseAddr(in.st.Gateway)
	d := in.st.ClusterDomain
	in.ns = &netns.Namespace{
		Name: netns.NamespaceName(in.st.Bridge, in.o.Namespace, in.name), Addr: netip.PrefixFrom(a.Address, a.Bits), Gateway: gw, Bridge: in.st.Bridge,
		Search: []string{in.o.Namespace + ".svc." + d, "svc." + d, d},
	}
	if err := in.ns.Create(ctx); err != nil {
		return err
	}
	// The proxy drops to a user of its own: it must be able to read its
	// files, and no other proxy can.
	in.proxyUID = proxyUID(in.ns.Addr.Addr())
	for _, p := range []string{in.o.DataDir, filepath.Dir(in.dir)} {
		if err := os.Chmod(p, 0o711); err != nil {
			return err
		}
	}
	for _, p := range []string{in.dir, filepath.Join(in.dir, "token"), filepath.Join(in.dir, "trust-anchors.pem")} {
		if err := os.Chown(p, in.proxyUID, in.proxyUID); err != nil {
			return err
		}
	}
	initArgs := in.ns.Exec(in.o.ProxyExe, "init", "--proxy-uid", strconv.Itoa(in.proxyUID),
		"--skip-inbound-ports", strconv.Itoa(adminPort)+","+strconv.Itoa(tapPort))
	if out, err := exec.CommandContext(ctx, initArgs[0], initArgs[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables in %s: %w: %s", in.ns.Name, err, strings.TrimSpace(string(out)))
	}
	if !in.o.AllowUDP {
		if err := in.refuseUDP(ctx, gw); err != nil {
			return err
		}
	}
	in.appPort = in.o.Port
	in.admin = net.JoinHostPort(in.addr.String(), strconv.Itoa(adminPort))
	if in.appPort != 0 {
		in.env = append(in.env, "LISTEN_ADDR=0.0.0.0:"+strconv.Itoa(in.appPort))
	}
	for _, u := range in.o.Upstreams {
		in.upstream[u.EnvName()] = net.JoinHostPort(u.Name+"."+in.upstreamNS(u)+".svc."+d, strconv.Itoa(u.Port))
	}
	return nil
}

func (in *instance) upstreamNS(u Upstream) string {
	if u.Namespace != "" {
		return u.Namespace
	}
	return in.o.Namespace
}

// setupExplicit picks loopback ports for the proxy and the application.
func (in *instance) setupExplicit() {
	in.addr = netip.MustParseAddr("127.0.0.1")
	if in.o.Port != 0 {
		in.appPort = in.o.Port + in.index
		in.env = append(in.env, "LISTEN_ADDR=127.0.0.1:"+strconv.Itoa(in.appPort))
	}
}

func (in *instance) proxyArgs() ([]string, error) {
	args := []string{in.o.ProxyExe,
		"--identity", in.identity(), "--identity-addr", in.st.ControlAddr,
		"--identity-token-file", filepath.Join(in.dir, "token"), "--trust-anchors", filepath.Join(in.dir, "trust-anchors.pem"),
		"--destination-addr", in.st.ControlAddr, "--cluster-domain", in.st.ClusterDomain, "--workload", in.name,
		"--workload-label", resources.WorkloadLabel + "=" + in.o.Name,
		"--workload-address", in.addr.String(), "--shutdown-grace-period", "5s",
		"--log-format", "text", "--log-level", in.o.ProxyLogLevel,
	}
	if in.appPort != 0 {
		sp := fmt.Sprintf("%d=%d", in.o.Port, in.appPort)
		if in.o.Protocol != "" {
			sp += "/" + in.o.Protocol
		}
		if name := cmp.Or(in.o.PortName, in.o.Protocol); name != "" {
			sp = name + ":" + sp
		}
		args = append(args, "--service", in.o.Service, "--service-port", sp)
	} else {
		// A client only: its spans still name what it is.
		args = append(args, "--trace-service-name", in.o.Name)
	}
	for k, v := range appUserLabels(in.user) {
		args = append(args, "--workload-label", k+"="+v)
	}
	for k, v := range in.restartLabels() {
		args = append(args, "--workload-label", k+"="+v)
	}
	if in.o.AccessLog != "" {
		args = append(args, "--access-log", in.o.AccessLog)
	}
	if policy := cmp.Or(in.o.DefaultInboundPolicy, in.st.NamespaceInboundPolicies[in.o.Namespace], in.st.DefaultInboundPolicy); policy != "" {
		args = append(args, "--default-inbound-policy", policy)
	}
	if in.o.TraceCollector != "" {
		args = append(args, "--trace-collector", in.o.TraceCollector)
	}
	if in.o.RequireIdentity && in.appPort != 0 {
		args = append(args, "--require-identity-inbound-ports", strconv.Itoa(in.appPort))
	}
	if len(in.o.ProbePaths) > 0 {
		// Probes come from this host: its address on the bridge, or loopback.
		host := cmp.Or(in.st.Gateway, "127.0.0.1")
		args = append(args, "--probe-paths", strings.Join(in.o.ProbePaths, ","), "--probe-networks", host+"/32")
	}
	if in.transparent {
		args = append(args, "--inbound-addr", "0.0.0.0:"+strconv.Itoa(inboundPort), "--outbound-addr", "127.0.0.1:"+strconv.Itoa(outboundPort),
			"--admin-addr", "0.0.0.0:"+strconv.Itoa(adminPort), "--tap-addr", "0.0.0.0:"+strconv.Itoa(tapPort), "--run-as-uid", strconv.Itoa(in.proxyUID))
		return in.ns.Exec(args...), nil
	}
	// The proxy binds free ports itself and says which (readAddresses):
	// no port is chosen here and bound there, which races other runs.
	in.admin = ""
	os.Remove(in.readyFile())
	args = append(args, "--inbound-addr", "127.0.0.1:0", "--outbound-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--tap-addr", "127.0.0.1:0", "--ready-file", in.readyFile())
	if in.appPort != 0 {
		args = append(args, "--app-addr", "127.0.0.1:"+strconv.Itoa(in.appPort))
	}
	d := in.st.ClusterDomain
	for _, u := range in.o.Upstreams {
		args = append(args, "--upstream", fmt.Sprintf("%s=%d:%s.%s.svc.%s:%d", u.Name, u.LocalPort, u.Name, in.upstreamNS(u), d, u.Port))
	}
	return args, nil
}

func (in *instance) readyFile() string { return filepath.Join(in.dir, "proxy-addresses.json") }

// readAddresses learns, from the proxy's ready file, the ports it bound in
// explicit mode: its admin port, and the ones the application is told of
// (the outbound port as HTTP_PROXY, one per upstream). False until the
// proxy wrote the file.
func (in *instance) readAddresses() (bool, error) {
	b, err := os.ReadFile(in.readyFile())
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	var addrs struct {
		Outbound, Admin string
		Upstreams       map[string]string
	}
	if err == nil {
		err = json.Unmarshal(b, &addrs)
	}
	if err != nil {
		return false, fmt.Errorf("the proxy's addresses: %w", err)
	}
	in.admin = addrs.Admin
	for _, u := range in.o.Upstreams {
		in.upstream[u.EnvName()] = addrs.Upstreams[u.Name]
	}
	in.env = append(in.env, "HTTP_PROXY=http://"+addrs.Outbound, "http_proxy=http://"+addrs.Outbound)
	return true, nil
}

// startProxy starts the proxy and waits until its admin port says ready.
func (in *instance) startProxy(ctx context.Context) error {
	args, err := in.proxyArgs()
	if err != nil {
		return err
	}
	in.proxy = command(args, nil, prefixed(in.o.Err, in.name+" proxy | "), prefixed(in.o.Err, in.name+" proxy | "))
	if err := in.proxy.Start(); err != nil {
		return fmt.Errorf("starting the proxy: %w", err)
	}
	in.proxyC = wait(in.proxy)
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	client := &http.Client{Timeout: time.Second}
	// A wait longer than a moment is told, with what the proxy waits for.
	start, tellAt := time.Now(), readyTell
	notReady := "it has not bound its ports"
	for {
		select {
		case err := <-in.proxyC:
			in.proxyC = closedWith(err)
			return fmt.Errorf("the proxy exited before it was ready: %v", err)
		case <-deadline.C:
			return fmt.Errorf("the proxy was not ready within %v (admin http://%s/ready: %s)", readyTimeout, in.admin, notReady)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if waited := time.Since(start); waited >= tellAt {
			fmt.Fprintf(in.o.Err, "%s: waiting for its proxy to be ready (%v so far: %s)\n", in.name, waited.Round(time.Second), notReady)
			tellAt *= 2
		}
		if in.admin == "" {
			if ok, err := in.readAddresses(); !ok {
				if err != nil {
					return err
				}
				continue
			}
		}
		resp, err := client.Get("http://" + in.admin + "/ready")
		if err != nil {
			notReady = err.Error()
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			// Certified: the single-use token is spent and not needed
			// again; nothing of it stays behind.
			os.Remove(filepath.Join(in.dir, "token"))
			return nil
		}
		notReady = cmp.Or(strings.TrimSpace(string(body)), resp.Status)
	}
}

// startApp starts the application with its environment and expanded args;
// an attached replica's application runs already.
func (in *instance) startApp() error {
	in.env = append(in.env, "TRELLIS_INSTANCE="+in.name, "TRELLIS_NAMESPACE="+in.o.Namespace)
	if in.appPort != 0 {
		in.env = append(in.env, "PORT="+strconv.Itoa(in.appPort), "TRELLIS_SERVICE="+in.o.Service)
	}
	for k, v := range in.upstream {
		in.env = append(in.env, k+"="+v)
	}
	if in.o.Attach {
		in.appC = make(chan error, 1) // never exits: only the proxy can
		return nil
	}
	vars := map[string]string{}
	for _, kv := range in.env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	argv := make([]string, len(in.o.Command))
	for i, a := range in.o.Command {
		argv[i] = os.Expand(a, func(k string) string {
			if v, ok := vars[k]; ok {
				return v
			}
			return "$" + k
		})
	}
	var binary *os.File
	if in.user != nil {
		path, err := exec.LookPath(argv[0])
		if err != nil {
			return fmt.Errorf("command %q: %w", argv[0], err)
		}
		if !in.user.canRun(path) {
			// The command is handed over open (fd 3, executed as
			// /proc/self/fd/3, which is then its argv[0]), so that the
			// user need not be able to reach it: `go run` builds under a
			// directory only root may enter.
			if binary, err = os.Open(path); err != nil {
				return fmt.Errorf("command %q: %w", argv[0], err)
			}
			defer binary.Close()
			argv = append([]string{"/proc/self/fd/3"}, argv[1:]...)
		}
		argv = in.user.wrap(argv)
		in.env = append(in.env, in.user.env()...)
	}
	if in.transparent {
		argv = in.ns.Exec(argv...)
	}
	env := append(append(os.Environ(), in.o.Env...), in.env...)
	in.app = command(argv, env, prefixed(in.o.Out, in.name+" | "), prefixed(in.o.Err, in.name+" | "))
	if binary != nil {
		in.app.ExtraFiles = []*os.File{binary}
	}
	if err := in.app.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", in.o.Command[0], err)
	}
	in.appC = wait(in.app)
	return nil
}

// stop ends the replica: the proxy first (it deregisters, then drains),
// then the application; then it removes the namespace, the address, the
// workload (if its proxy could not deregister it) and the files.
func (in *instance) stop() { in.stopOnce.Do(in.teardown) }

func (in *instance) teardown() {
	terminate(in.proxy, in.proxyC)
	terminate(in.app, in.appC)
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if in.api != nil && in.name != "" {
		err := in.api.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: in.o.Namespace, Name: in.name})
		if err != nil && !localapi.NotFound(err) {
			fmt.Fprintf(in.o.Err, "%s: removing the workload: %v\n", in.name, err)
		}
	}
	if in.ns != nil {
		if err := in.ns.Delete(ctx); err != nil {
			fmt.Fprintf(in.o.Err, "%s: removing network namespace %s: %v\n", in.name, in.ns.Name, err)
		}
		in.api.ReleaseAddress(ctx, in.key())
		// The last instance of a control plane that stopped before it
		// removes the bridge that plane kept for it.
		if err := netns.RemoveBridgeIfUnused(ctx, in.ns.Bridge); err != nil {
			fmt.Fprintf(in.o.Err, "%s: removing bridge %s: %v\n", in.name, in.ns.Bridge, err)
		}
	}
	if in.dir != "" {
		os.RemoveAll(in.dir)
	}
}

// command builds a process in its own process group (so the terminal's
// Ctrl-C reaches only trellis, which stops things in order) that dies
// with trellis.
func command(argv, env []string, stdout, stderr io.Writer) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// wait reports the process's exit on a channel.
func wait(cmd *exec.Cmd) chan error {
	c := make(chan error, 1)
	go func() { c <- cmd.Wait() }()
	return c
}

func closedWith(err error) chan error {
	c := make(chan error, 1)
	c <- err
	return c
}

// terminate sends SIGTERM to the process group, then SIGKILL if it has
// not exited within stopTimeout.
func terminate(cmd *exec.Cmd, done chan error) {
	if cmd == nil || cmd.Process == nil || done == nil {
		return
	}
	select {
	case err := <-done:
		done <- err
		return
	default:
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
	case <-time.After(stopTimeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		done <- <-done
	}
}

// portFree reports whether 127.0.0.1:port can be listened on.
func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d is already in use (explicit mode: the application is to listen on it)", port)
		}
		return err
	}
	return l.Close()
}
