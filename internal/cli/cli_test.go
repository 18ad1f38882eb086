package cli

import (
	"bytes"
	"strings"
	"testing"
)

func execute(args ...string) (string, error) {
	cmd := New()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := execute("version")
	if err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--rps=0"}, "--rps"},
		{[]string{"demo", "--fail-rate=2"}, "--fail-rate"},
		{[]string{"demo", "extra"}, "unknown command"},
	} {
		_, err := execute(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v; want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
