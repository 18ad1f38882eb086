package app_test

import (
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// h2specApplication are the h2spec cases whose answer is the
// application's, each with why: the proxy passes them on unchanged, and
// the test checks that the application alone fails them too.
var h2specApplication = map[string]string{
	// A connection that does not start as HTTP passes to the application
	// unchanged. Go's server answers an invalid preface by closing with a
	// reset, which h2spec v2.2.1 does not take for a close on Linux (it
	// compares the wrapped read error with ECONNRESET).
	"http2/3.5/2": "invalid preface: the application's answer",
}

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, against the
// inbound listener in front of an h2c-only application (as a gRPC server
// is) and against an outbound upstream port (two proxies, mTLS between
// them): every case passes but the application's own answers.
func TestH2Spec(t *testing.T) {
	h2spec := testkit.Tool(t, "h2spec", "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	// The application reads the request before it answers, so a request
	// body that breaks the rules is read whole, and refused, before there
	// is an answer.
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Write([]byte("hello"))
	}))
	app.Config.Protocols = &h2c
	app.Start()
	defer app.Close()
	appFails, _ := runH2Spec(t, h2spec, app.Listener.Addr().String())
	for id, why := range h2specApplication {
		if _, ok := appFails[id]; !ok {
			t.Errorf("h2spec %s passes against the application alone: it is not the application's answer (%s)", id, why)
		}
	}
	in, out := proxyPairAddrs(t, app.Listener.Addr().String(), false)
	for _, l := range []struct{ name, addr string }{{"inbound", in}, {"outbound", out}} {
		t.Run(l.name, func(t *testing.T) {
			failed, output := runH2Spec(t, h2spec, l.addr)
			for id, msg := range failed {
				if _, ok := h2specApplication[id]; !ok {
					t.Errorf("h2spec %s failed: %s", id, msg)
				}
			}
			if t.Failed() {
				t.Log(output)
			}
		})
	}
}

// runH2Spec runs every h2spec case against addr (h2c) and returns the
// failed ones by id ("6.5.3/1") with h2spec's message, and its output.
func runH2Spec(t *testing.T, h2spec, addr string) (map[string]string, string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	cmd := exec.Command(h2spec, "-h", "127.0.0.1", "-p", port, "-o", "3", "-j", report)
	output, err := cmd.CombinedOutput()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		t.Fatalf("h2spec: %v", err)
	}
	failed, total := h2specFailures(t, report)
	if total != 145 {
		t.Errorf("h2spec ran %d cases against %s, want 145", total, addr)
	}
	return failed, string(output)
}

// h2specFailures reads h2spec's JUnit report: the failed cases by id
// ("6.5.3/1") with h2spec's message, and how many cases ran.
func h2specFailures(t *testing.T, path string) (map[string]string, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Name    string `xml:"classname,attr"`
				Failure *struct {
					Text string `xml:",chardata"`
				} `xml:"failure"`
				Error *struct {
					Text string `xml:",chardata"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	failed, total := map[string]string{}, 0
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			total++
			id := s.Package + "/" + strconv.Itoa(i+1)
			switch {
			case c.Failure != nil:
				failed[id] = c.Name + ": " + strings.TrimSpace(c.Failure.Text)
			case c.Error != nil:
				failed[id] = c.Name + ": " + strings.TrimSpace(c.Error.Text)
			}
		}
	}
	return failed, total
}
