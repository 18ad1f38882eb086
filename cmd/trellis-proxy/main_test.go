package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// The test binary doubles as the proxy binary: with this variable set it
// runs main instead of the tests, so these tests exercise the real process,
// flags, environment and signals.
const asProxy = "TRELLIS_PROXY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	testkit.RunMainIf(asProxy, main)
	os.Exit(m.Run())
}

func proxyCmd(t *testing.T, args ...string) *exec.Cmd { return testkit.Command(t, asProxy, args...) }

func freePort(t *testing.T) string { return testkit.FreeAddr(t) }

func TestBadConfigurationExitsNamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"--detect-timeout=-1s"}, want: "detect-timeout"},
		{env: "TRELLIS_PROXY_ADMIN_ADDR=nowhere", want: "admin-addr"},
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
	} {
		cmd := proxyCmd(t, tc.args...)
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%v %s: exit %v; want status 1", tc.args, tc.env, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v %s: output %q does not name %q", tc.args, tc.env, out, tc.want)
		}
	}
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	const inFlight = 200
	var started atomic.Int64
	allStarted := make(chan struct{})
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if started.Add(1) == inFlight {
			close(allStarted)
		}
		<-release
		io.WriteString(w, "done")
	}))
	defer backend.Close()

	inbound, admin := freePort(t), freePort(t)
	cmd := proxyCmd(t, "--inbound-addr="+inbound, "--outbound-addr="+freePort(t), "--admin-addr="+admin,
		"--app-addr="+backend.Listener.Addr().String(), "--shutdown-grace-period=30s", "--log-format=text")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testkit.WaitReady(t, "http://"+admin+"/ready")

	var wg sync.WaitGroup
	results := make(chan error, inFlight)
	for i := 0; i < inFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One connection per request, like 200 separate clients.
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get("http://" + inbound + "/slow")
			if err != nil {
				results <- err
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != "done" {
				results <- fmt.Errorf("status %d body %q err %v", resp.StatusCode, body, err)
				return
			}
			results <- nil
		}()
	}
	select {
	case <-allStarted:
	case <-time.After(20 * time.Second):
		t.Fatalf("only %d of %d requests reached the application", started.Load(), inFlight)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once draining starts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", inbound, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the proxy still accepts connections 5s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(results)
	failed := 0
	for err := range results {
		if err != nil {
			failed++
			if failed < 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d in-flight requests failed during shutdown\n%s", failed, inFlight, logs.String())
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("proxy exited with %v; want 0\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("proxy did not exit after its requests finished\n%s", logs.String())
	}
}
