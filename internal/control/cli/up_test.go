package cli

import (
	"io"
	"strings"
	"testing"
)

func TestUpRefusesAnUnknownDefaultPolicy(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{
		{"--default-inbound-policy=allow", `--default-inbound-policy "allow": must be one of all-unauthenticated`},
		{"--namespace-inbound-policy=shop=allow", `--namespace-inbound-policy shop=allow: the policy must be one of all-unauthenticated`},
		{"--namespace-inbound-policy=Shop=deny", `--namespace-inbound-policy Shop=deny: "Shop" is not a namespace`},
	} {
		cmd := New()
		cmd.SetOut(io.Discard)
		cmd.SetArgs([]string{"up", "--data-dir", t.TempDir(), "--network", "none", "--control-port", "0", "--admin-addr", "127.0.0.1:0", tc.flag})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("up %s: %v; want %q", tc.flag, err, tc.want)
		}
	}
}
