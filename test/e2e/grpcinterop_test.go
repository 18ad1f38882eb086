package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// grpcVersion pins the gRPC interop client, server and stress client to
// the gRPC the mesh itself is built with.
const grpcVersion = "v1.85.0"

// grpcInteropCases are the interop client's cases that need no Google
// credentials and that the Go interop server answers (pick_first_unary
// wants a server ID and orca_* want ORCA reports, which only its xDS
// variant sends).
var grpcInteropCases = []string{
	"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
	"timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response", "status_code_and_message",
	"special_status_message", "custom_metadata", "unimplemented_method", "unimplemented_service", "rpc_soak", "channel_soak",
}

// TestGRPCInterop runs gRPC's own interop suite, then its stress client for
// a minute (deadlines expiring on a sleeping server among the calls),
// through two proxies with mTLS between them: every case passes, and
// neither proxy logs a warning.
func TestGRPCInterop(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"go.mod": "google.golang.org/grpc " + grpcVersion + "\n", ".ci/run": "grpc=" + grpcVersion + "\n"} {
		if b, err := os.ReadFile(filepath.Join(root, file)); err != nil || !strings.Contains(string(b), want) {
			t.Fatalf("%s does not pin %q (%v): keep the interop tools at the mesh's gRPC", file, want, err)
		}
	}
	client := testkit.Tool(t, "grpc-interop/client", "google.golang.org/grpc/interop/client@"+grpcVersion)
	server := testkit.Tool(t, "grpc-interop/server", "google.golang.org/grpc/interop/server@"+grpcVersion)
	stress := testkit.Tool(t, "grpc-stress/client", "google.golang.org/grpc/interop/stress/client@"+grpcVersion)
	port := freePort(t)
	srv := exec.Command(server, "--port", strconv.Itoa(port), "--use_tls=false")
	srvOut := &syncBuffer{}
	srv.Stdout, srv.Stderr = srvOut, srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", loopback(port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interop server did not listen:\n%s", srvOut)
		}
	}
	cp := startIdentity(t, time.Hour)
	entry, clientProxy, serverProxy, _ := meshedPair(t, cp, loopback(port))
	host, entryPort, _ := net.SplitHostPort(entry)

	for _, tc := range grpcInteropCases {
		out, err := exec.Command(client, "--server_host", host, "--server_port", entryPort, "--use_tls=false", "--test_case", tc).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", tc, err, out)
		}
	}

	mix := "empty_unary:20,large_unary:20,client_streaming:10,server_streaming:10,ping_pong:10,empty_stream:5," +
		"timeout_on_sleeping_server:10,cancel_after_begin:5,cancel_after_first_response:5,status_code_and_message:5,custom_metadata:5"
	out, err := exec.Command(stress, "--server_addresses", entry, "--test_cases", mix, "--test_duration_secs", "60",
		"--num_channels_per_server", "4", "--num_stubs_per_channel", "4", "--metrics_port", strconv.Itoa(freePort(t))).CombinedOutput()
	if err != nil {
		t.Errorf("stress client: %v\n%s", err, tail(string(out), 40))
	}
	// (The stress client's own "Total calls made" counts wrongly.)
	calls := metricstest.Scrape(t, "http://"+clientProxy.admin+"/metrics").Sum("request_total", map[string]string{"direction": "outbound", "tls": "true"})
	t.Logf("%.0f calls over mTLS (interop cases, then 60 s of stress)", calls)
	if calls < 1000 {
		t.Errorf("only %.0f calls crossed the proxies", calls)
	}
	for _, p := range []*proxyProc{clientProxy, serverProxy} {
		for _, line := range strings.Split(p.logs.String(), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("%s proxy: %s", p.name, line)
			}
		}
	}
}
