package injector

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Misconfiguration is refused before anything is served, naming the flag.
func TestNewNamesTheFlagAtFault(t *testing.T) {
	dir := t.TempDir()
	anchors := filepath.Join(dir, "ca.crt")
	os.WriteFile(anchors, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--tls-cert-file and --tls-key-file are required"},
		{[]string{"--tls-cert-file=/nope", "--tls-key-file=/nope"}, "--tls-cert-file, --tls-key-file"},
	} {
		var o Options
		fs := pflag.NewFlagSet("injector", pflag.ContinueOnError)
		o.Flags(fs)
		if err := fs.Parse(append(tc.args, "--trust-anchors="+anchors)); err != nil {
			t.Fatal(err)
		}
		_, err := New(o, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", tc.args, err, tc.want)
		}
	}
}
