package outbound

import "testing"

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":      "example.com:80",
		"example.com:8080": "example.com:8080",
		"10.0.0.1":         "10.0.0.1:80",
		"[fd00::1]":        "[fd00::1]:80",
		"[fd00::1]:8080":   "[fd00::1]:8080",
		"fd00::1":          "[fd00::1]:80",
	} {
		if got := withDefaultPort(in, "80"); got != want {
			t.Errorf("withDefaultPort(%q) = %q; want %q", in, got, want)
		}
	}
}
