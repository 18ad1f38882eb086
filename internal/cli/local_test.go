package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/control/plane"
	"github.com/trellis-mesh/trellis/internal/local/up"
)

// startUp runs a local control plane (no bridge network) for the test and
// returns its data directory.
func startUp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var po plane.Options
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	po.Flags(fs)
	if err := fs.Parse([]string{"--data-dir=" + dir, "--admin-addr=127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	u, err := up.Start(context.Background(), up.Options{Plane: po, Network: "none"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return dir
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const goodService = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 8080
    protocol: http
`

func TestApplyGetDelete(t *testing.T) {
	dir := startUp(t)
	out, err := execute("--data-dir", dir, "apply", "-f", writeFile(t, goodService+"---\n"+strings.ReplaceAll(goodService, "web", "api")))
	if err != nil || out != "service/web created\nservice/api created\n" {
		t.Fatalf("apply: %q, %v", out, err)
	}
	if out, err = execute("--data-dir", dir, "apply", "-f", writeFile(t, goodService)); err != nil || out != "service/web unchanged\n" {
		t.Fatalf("re-apply: %q, %v", out, err)
	}
	out, err = execute("--data-dir", dir, "get", "svc")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAMESPACE") || !strings.Contains(lines[1], "api") ||
		!strings.Contains(lines[2], "web") || !strings.Contains(lines[2], "8080/http") || !strings.Contains(out, "10.240.0.") {
		t.Fatalf("get svc:\n%s", out)
	}
	out, err = execute("--data-dir", dir, "get", "service", "web", "-o", "yaml")
	if err != nil || !strings.Contains(out, "clusterIP: 10.240.0.1") || !strings.Contains(out, "resourceVersion:") {
		t.Fatalf("get -o yaml: %q, %v", out, err)
	}
	if out, err = execute("--data-dir", dir, "delete", "service", "web"); err != nil || out != "service/web deleted\n" {
		t.Fatalf("delete: %q, %v", out, err)
	}
	if _, err = execute("--data-dir", dir, "get", "service", "web"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err = execute("--data-dir", dir, "get", "widgets"); err == nil || !strings.Contains(err.Error(), `unknown kind "widgets"`) {
		t.Fatalf("get of an unknown kind: %v", err)
	}
}

func routeDoc(parent, path, pathType string) string {
	if pathType == "" {
		pathType = "PathPrefix"
	}
	return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs: [` + parent + `]
  rules:
  - matches: [{path: {type: ` + pathType + `, value: "` + path + `"}}]
`
}

// Bad input is refused with a message naming what is wrong, and nothing
// of the batch is written.
func TestApplyRefusesBadInputAndWritesNothing(t *testing.T) {
	dir := startUp(t)
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"malformed YAML", "kind: Service\nmetadata: [name: x\n", "document 2"},
		{"unknown kind", "apiVersion: trellis.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: w\nspec: {}\n", `kind: unknown kind "Widget"`},
		{"unknown kind in a namespace", "apiVersion: trellis.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\nspec: {}\n", `kind: unknown kind "Widget"`},
		{"annotations too large", strings.Replace(goodService, "metadata:", "metadata:\n  annotations: {big: \""+strings.Repeat("x", 300<<10)+"\"}", 1), "must be at most 256 KiB"},
		{"batch too large", bigBatch(), "larger than the 8 MiB"},
		{"invalid name", strings.Replace(goodService, "name: web", "name: Web_1", 1), "metadata.name"},
		{"invalid spec", strings.Replace(goodService, "port: 8080", "port: 80800", 1), "spec.ports[0].port"},
		{"unknown field", strings.Replace(goodService, "spec:", "spek: {}\nspec:", 1), `unknown field "spek"`},
		{"route on a Gateway", routeDoc("{kind: Gateway, name: gw}", "/", ""), "spec.parentRefs[0].kind"},
		{"route with a bad regex", routeDoc("{kind: Service, name: web}", "(", "RegularExpression"), "spec.rules[0].matches[0].path.value"},
		{"route with a bad annotation", strings.Replace(routeDoc("{kind: Service, name: web}", "/", ""), "metadata:", "metadata:\n  annotations: {retry.trellis.dev/http: \"6xx\"}", 1), `metadata.annotations["retry.trellis.dev/http"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A valid object first: it must not be written either.
			file := writeFile(t, strings.ReplaceAll(goodService, "web", "first")+"---\n"+tc.doc)
			_, err := execute("--data-dir", dir, "apply", "-f", file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one mentioning %q", err, tc.want)
			}
			out, err := execute("--data-dir", dir, "get", "services", "-A")
			if err != nil || !strings.HasPrefix(out, "no services") {
				t.Fatalf("after a refused apply: %q, %v", out, err)
			}
		})
	}
}

// bigBatch is 45 valid Services of 200 KiB each: a request over 8 MiB.
func bigBatch() string {
	var b strings.Builder
	for i := range 45 {
		fmt.Fprintf(&b, "---\n%s", strings.Replace(strings.ReplaceAll(goodService, "name: web", fmt.Sprintf("name: web-%d", i)),
			"metadata:", "metadata:\n  annotations: {big: \""+strings.Repeat("x", 200<<10)+"\"}", 1))
	}
	return b.String()
}

// proxyOnPath puts a trellis-proxy on PATH for the test (one that fails
// if run): trellis run finds it before it checks the rest.
func proxyOnPath(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, proxyBinary), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestCommandsWithoutAControlPlaneSaySo(t *testing.T) {
	proxyOnPath(t)
	dir := t.TempDir()
	for _, args := range [][]string{{"status"}, {"get", "svc"}, {"run", "--name", "web", "--port", "8080", "--", "true"}} {
		_, err := execute(append([]string{"--data-dir", dir}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "trellis up") {
			t.Errorf("%v: %v; want a hint to start 'trellis up'", args, err)
		}
	}
}

// run fails fast, leaving nothing registered, when the application
// cannot start.
func TestRunFailsFast(t *testing.T) {
	proxyOnPath(t)
	dir := startUp(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"port in use", []string{"run", "--mode", "explicit", "--name", "web", "--port", port, "--", "true"}, "already in use (explicit mode: the application is to listen on it); to mesh an application that runs already, add --attach"},
		{"missing command", []string{"run", "--name", "web", "--port", "8080", "--", "no-such-command-here"}, "no-such-command-here"},
		{"no command", []string{"run", "--name", "web", "--port", "8080"}, "no command"},
		{"command not after --", []string{"run", "--name", "web", "--port", "8080", "sleep", "1"}, "after --"},
		{"bad name", []string{"run", "--name", "Web", "--port", "8080", "--", "true"}, "--name"},
		{"bad port", []string{"run", "--name", "web", "--port", "70000", "--", "true"}, "--port"},
		{"attach with a command", []string{"run", "--name", "web", "--port", "8080", "--attach", "--", "true"}, "--attach runs no command"},
		{"attach replicas", []string{"run", "--name", "web", "--port", "8080", "--attach", "--replicas", "2"}, "--replicas must be 1"},
		{"client with a service", []string{"run", "--name", "job", "--service", "web", "--", "true"}, "--service web without --port"},
		{"client with a protocol", []string{"run", "--name", "job", "--protocol", "grpc", "--", "true"}, "--protocol grpc without --port"},
		{"bad local port", []string{"run", "--name", "web", "--upstream", "api:80=0", "--", "true"}, "NAME[.NAMESPACE]:PORT[=LOCALPORT]"},
		{"bad inbound policy", []string{"run", "--name", "web", "--port", "8080", "--default-inbound-policy", "allow-all", "--", "true"}, `--default-inbound-policy "allow-all": must be one of all-unauthenticated`},
		{"require identity of a client", []string{"run", "--name", "web", "--require-identity", "--", "true"}, `--require-identity, --probe-path and --port-name are about the application's port: give --port`},
		{"bad port name", []string{"run", "--name", "web", "--port", "8080", "--port-name", "Grpc", "--", "true"}, `--port-name "Grpc": must contain only`},
		{"probe path not a path", []string{"run", "--name", "web", "--port", "8080", "--probe-path", "healthz", "--", "true"}, `--probe-path "healthz": must be a path such as /healthz`},
		{"pinned port, replicas", []string{"run", "--name", "web", "--port", "8080", "--replicas", "2", "--upstream", "api:80=9000", "--", "true"}, "serves one replica"},
		{"bad upstream", []string{"run", "--name", "web", "--port", "8080", "--upstream", "api", "--", "true"}, "--upstream"},
		{"unknown user", []string{"run", "--name", "web", "--port", "8080", "--user", "no-such-user-here", "--", "true"}, "--user no-such-user-here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := execute(append([]string{"--data-dir", dir}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one mentioning %q", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}
	out, err := execute("--data-dir", dir, "get", "workloads", "-A")
	if err != nil || !strings.HasPrefix(out, "no workloads") {
		t.Fatalf("after failed runs: %q, %v", out, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "run")); len(ents) != 0 {
		t.Errorf("instance files left behind: %v", ents)
	}
}

// Without trellis-proxy beside trellis or on PATH, run says so and how to
// build it.
func TestRunNamesAMissingProxyBinary(t *testing.T) {
	dir := startUp(t)
	t.Setenv("PATH", t.TempDir())
	_, err := execute("--data-dir", dir, "run", "--name", "web", "--port", "8080", "--", "true")
	if err == nil || !strings.Contains(err.Error(), "trellis-proxy is neither beside") || !strings.Contains(err.Error(), "go build -o bin/ ./cmd/...") {
		t.Fatalf("run without trellis-proxy: %v", err)
	}
}
