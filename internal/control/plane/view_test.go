package plane

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
)

// --view-addr serves the API's reads (status, resources, metrics) and
// nothing that changes the mesh, mints a token or stops the control
// plane.
func TestViewAPIIsReadOnly(t *testing.T) {
	p, _ := startPlane(t, "--view-addr=127.0.0.1:0")
	addr := p.view.Addr().String()
	view := localapi.NewTCPClient(addr, "view")
	if st, err := view.Status(context.Background()); err != nil || st.ControlAddr == "" {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if _, err := view.List(context.Background(), resources.KindWorkload, ""); err != nil {
		t.Fatalf("list: %v", err)
	}
	var rows any
	if err := view.Query(context.Background(), "/v1/stat?kind=workload&window=1m", &rows); err != nil {
		t.Fatalf("stat: %v", err)
	}
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPut, "/v1/resources", `{"items":[]}`},
		{http.MethodDelete, "/v1/resources/Workload/default/web", ""},
		{http.MethodPost, "/v1/join-tokens", `{"identity":"spiffe://cluster.local/ns/trellis/sa/trellis-identity"}`},
		{http.MethodPost, "/v1/addresses", `{}`},
		{http.MethodPost, "/v1/shutdown", ""},
	} {
		req, _ := http.NewRequest(c.method, "http://"+addr+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the view: %d", c.method, c.path, resp.StatusCode)
		}
	}
	if _, err := view.Status(context.Background()); err != nil {
		t.Fatalf("the control plane stopped: %v", err)
	}
}
