package destination

import (
	"net/netip"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	for _, tc := range []struct {
		in, ctxNS string
		want      target
		bad       bool
	}{
		{in: "web:8080", want: target{name: "web", namespace: "default", port: 8080}},
		{in: "web:8080", ctxNS: "shop", want: target{name: "web", namespace: "shop", port: 8080}},
		{in: "web.shop:80", want: target{name: "web", namespace: "shop", port: 80}},
		{in: "web.shop.svc:80", want: target{name: "web", namespace: "shop", port: 80}},
		{in: "Web.Shop.svc.cluster.local.:80", want: target{name: "web", namespace: "shop", port: 80}},
		{in: "10.240.0.7:8080", want: target{ip: netip.MustParseAddr("10.240.0.7"), port: 8080}},
		{in: "[::ffff:10.240.0.7]:8080", want: target{ip: netip.MustParseAddr("10.240.0.7"), port: 8080}},
		{in: "web", bad: true},
		{in: "web:0", bad: true},
		{in: "web:http", bad: true},
		{in: ":80", bad: true},
	} {
		got, err := parseAuthority(tc.in, tc.ctxNS, "cluster.local")
		if tc.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
