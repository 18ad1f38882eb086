package plane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Requests whose bodies the client breaks — uploads cut short, malformed
// chunked framing — are the client's fault: answered 400 (or the
// connection closed), never 502, and never counted against the endpoints.
// Thirty of them in a row eject neither instance of the service, and the
// legitimate requests after them all succeed on both.
func TestClientBrokenBodiesEjectNoEndpoint(t *testing.T) {
	p, api := startPlane(t)
	for i := range 2 {
		name := "echo-" + strconv.Itoa(i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return // the proxy resets a stream whose client broke it
			}
			fmt.Fprint(w, name)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, "echo", "--app-addr="+ln.Addr().String(), "--workload="+name, "--service=echo", "--service-port=8080="+port)
	}
	waitWorkloads(t, api, 2)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	client, _ := proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	get := func() int {
		resp, err := http.Get("http://" + local + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 10 {
		if s := get(); s != http.StatusOK {
			t.Fatalf("warm-up: %d", s)
		}
	}

	goroutines, fds := runtime.NumGoroutine(), testkit.OpenFDs(t)
	broken := map[string]string{
		"truncated upload": "POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: 1000\r\n\r\n0123456789",
		"malformed chunks": "POST /upload HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
	}
	answers := map[string]int{}
	for range 15 {
		for what, raw := range broken {
			c, err := net.Dial("tcp", local)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, raw)
			c.(*net.TCPConn).CloseWrite() // the client is gone mid-body
			status := "closed"
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				status = strconv.Itoa(resp.StatusCode) + " " + resp.Header.Get("L5d-Proxy-Error")
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					t.Errorf("%s: answered %s, as if the upstream had failed", what, status)
				}
			}
			answers[what+": "+status]++
			c.Close()
		}
	}
	t.Logf("answers to broken requests: %v", answers)
	// The broken requests leave nothing behind in the proxies.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines+10 || testkit.OpenFDs(t) > fds+10; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 broken requests: %d goroutines (%d before), %d fds (%d before)", runtime.NumGoroutine(), goroutines, testkit.OpenFDs(t), fds)
		}
	}

	var failed []int
	for range 40 {
		if s := get(); s != http.StatusOK {
			failed = append(failed, s)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("after the broken requests %d of 40 legitimate ones failed: %v", len(failed), failed)
	}
	// Failure accrual took no endpoint out: the client proxy's decisions
	// name none ejected.
	resp, err := http.Get("http://" + client.AdminAddr.String() + "/debug/decisions?n=1024")
	if err != nil {
		t.Fatal(err)
	}
	decisions, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(decisions), "/upload") {
		t.Fatalf("decisions: %d %s", resp.StatusCode, decisions)
	}
	if strings.Contains(string(decisions), `"ejected"`) {
		t.Errorf("an endpoint was ejected:\n%s", decisions)
	}
	if strings.Contains(fmt.Sprint(answers), "502") {
		t.Errorf("a broken request was answered 502: %v", answers)
	}
}
