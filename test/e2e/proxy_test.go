package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// proxyUID is the user the transparent proxies run as (init's --proxy-uid).
const proxyUID = 2102

// proxyProc is one running trellis-proxy.
type proxyProc struct {
	name   string
	cmd    *exec.Cmd
	admin  string       // admin address, as seen from the proxy's namespace
	client *http.Client // reaches admin (through the namespace if needed)
	logs   *syncBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // valid once exited is closed
}

// syncBuffer collects a process's output.
type syncBuffer = testkit.SyncBuffer

// startProxy runs the proxy with args, inside netns as proxyUID when netns is
// set, and waits until its admin server answers /ready with 200. The caller
// stops it with stop.
func startProxy(t *testing.T, name, netns, admin string, args ...string) *proxyProc {
	t.Helper()
	return startBinary(t, proxyBin, name, netns, admin, args...)
}

// startBinary runs bin like startProxy runs the proxy: any Trellis binary
// with an admin server answering /ready.
func startBinary(t *testing.T, bin, name, netns, admin string, args ...string) *proxyProc {
	t.Helper()
	argv := append([]string{bin}, args...)
	if netns != "" {
		uid := strconv.Itoa(proxyUID)
		argv = append([]string{"ip", "netns", "exec", netns, "setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups"}, argv...)
	}
	p := &proxyProc{name: name, admin: admin, logs: &syncBuffer{}, exited: make(chan struct{})}
	d := &NetNSDialer{NetNS: netns}
	p.client = &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, Proxy: nil},
		Timeout:   5 * time.Second,
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting proxy %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	p.waitReady(t)
	return p
}

// waitReady polls GET /ready until it answers 200.
func (p *proxyProc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("proxy %s exited before becoming ready: %v\n%s", p.name, p.err, p.logs)
		default:
		}
		resp, err := p.client.Get("http://" + p.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("proxy %s: GET /ready not 200 within 15s (last: %s)\n%s", p.name, last, p.logs)
}

// stop ends the proxy with SIGTERM (SIGKILL after 5s) and reports a proxy
// that had died on its own.
func (p *proxyProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Errorf("proxy %s exited during the test: %v\n%s", p.name, p.err, p.logs)
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("proxy %s: exit after SIGTERM: %v, want a clean exit", p.name, p.err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("proxy %s did not stop within 5s of SIGTERM; killing it", p.name)
		p.cmd.Process.Kill()
		<-p.exited
	}
	if t.Failed() {
		t.Logf("proxy %s output:\n%s", p.name, tail(p.logs.String(), 60))
	}
}

func tail(s string, lines int) string {
	parts := strings.SplitAfter(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "")
}

// metrics fetches the proxy's /metrics text.
func (p *proxyProc) metrics(t *testing.T) string {
	t.Helper()
	resp, err := p.client.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("proxy %s: GET /metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy %s: GET /metrics: %s %v", p.name, resp.Status, err)
	}
	return string(b)
}

// sumSeries adds up the samples of metric whose labels include every one
// of labels (each `name="value"`), parsing text with Prometheus's parser.
func sumSeries(text, metric string, labels ...string) float64 {
	fams, err := metricstest.Parse(strings.NewReader(text))
	if err != nil {
		panic(fmt.Sprintf("/metrics does not parse: %v", err))
	}
	want := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		want[k] = strings.Trim(v, `"`)
	}
	return fams.Sum(metric, want)
}

// procStatusKB reads one "Name:   123 kB" field of /proc/<pid>/status.
func (p *proxyProc) procStatusKB(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("proxy %s: %v", p.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("proxy %s: /proc status %s: %q", p.name, field, line)
			}
			return n
		}
	}
	t.Fatalf("proxy %s: no %s in /proc/%d/status", p.name, field, p.cmd.Process.Pid)
	return 0
}

// memWatch measures how far a proxy's resident memory rises above its
// level when the watch starts: the kernel's peak (VmHWM, reset at the start
// through clear_refs where allowed) and VmRSS sampled every 10ms.
type memWatch struct {
	p         *proxyProc
	baseKB    int64
	hwmReset  bool
	mu        sync.Mutex
	maxRSSKB  int64
	stop      context.CancelFunc
	samplerWG sync.WaitGroup
}

func watchMemory(t *testing.T, p *proxyProc) *memWatch {
	t.Helper()
	// "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
	err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
	w := &memWatch{p: p, hwmReset: err == nil}
	w.baseKB = p.procStatusKB(t, "VmRSS")
	w.maxRSSKB = w.baseKB
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.samplerWG.Add(1)
	go func() {
		defer w.samplerWG.Done()
		path := fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					w.mu.Lock()
					w.maxRSSKB = max(w.maxRSSKB, n)
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

// growthKB stops the watch and returns the rise of resident memory and how
// it was measured.
func (w *memWatch) growthKB(t *testing.T) (int64, string) {
	t.Helper()
	w.stop()
	w.samplerWG.Wait()
	peak, how := w.maxRSSKB, "sampled VmRSS"
	if w.hwmReset {
		if hwm := w.p.procStatusKB(t, "VmHWM"); hwm > peak {
			peak, how = hwm, "VmHWM"
		}
	}
	return peak - w.baseKB, fmt.Sprintf("%s peak %d kB, VmRSS before %d kB", how, peak, w.baseKB)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now,
// outside the ephemeral range (see testkit.FreeAddr).
func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(testkit.FreeAddr(t))
	p, _ := strconv.Atoi(port)
	return p
}
