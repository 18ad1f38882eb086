package tap

import (
	"maps"
	"regexp"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

func TestAddDstLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{``, map[string]string{}},
		{`dst_namespace="shop",dst_service="orders"`, map[string]string{"dst_namespace": "shop", "dst_service": "orders"}},
		{`a="x\"y\\z\n",b=""`, map[string]string{"a": "x\"y\\z\n", "b": ""}},
		{`a="1",b="unterminated`, map[string]string{"a": "1"}},
		{`a="1"junk,b="2"`, map[string]string{"a": "1"}},
		{`="1"`, map[string]string{}},
	} {
		got := map[string]string{}
		addDstLabels(got, tc.in)
		if !maps.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.in, got, tc.want)
		}
	}
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// FuzzAddDstLabels checks that parsing never panics and that whatever
// metrics.RenderDst renders is read back as it was.
func FuzzAddDstLabels(f *testing.F) {
	f.Add("dst_service", "orders", "dst_namespace", "shop")
	f.Add("a", `q"\`+"\n", "b", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		in := map[string]string{}
		for k, v := range map[string]string{k1: v1, k2: v2} {
			if labelName.MatchString(k) && v != "" {
				in[k] = v
			}
		}
		got := map[string]string{}
		addDstLabels(got, metrics.RenderDst(in))
		if !maps.Equal(got, in) {
			t.Errorf("round trip of %q: got %q", in, got)
		}
		addDstLabels(map[string]string{}, k1+v1+k2+v2) // must not panic
	})
}
