// Package repotest holds checks on the repository as a whole.
package repotest

import (
	"os/exec"
	"strings"
	"testing"
)

// heavy are packages the data-plane proxy must never link: it runs next to
// every service instance, so its size and memory are multiplied by the fleet.
var heavy = []string{
	"k8s.io/client-go",
	"k8s.io/apimachinery",
	"github.com/prometheus/client_golang",
	"github.com/prometheus/prometheus",
	"go.etcd.io/bbolt",
	"google.golang.org/grpc/xds",
}

func TestProxyStaysLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/trellis-mesh/trellis/cmd/trellis-proxy").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list returned only %d packages; the check would be vacuous", len(deps))
	}
	for _, d := range deps {
		for _, h := range heavy {
			if d == h || strings.HasPrefix(d, h+"/") {
				t.Errorf("cmd/trellis-proxy imports %s (via %s); keep heavy packages out of the proxy", h, d)
			}
		}
	}
}
