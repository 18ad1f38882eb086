package identity

import (
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]ID{
		"spiffe://cluster.local/ns/default/sa/web":                       {"cluster.local", "default", "web"},
		"spiffe://example.org/ns/kube-system/sa/a.b-c":                   {"example.org", "kube-system", "a.b-c"},
		"spiffe://td_1/ns/n1/sa/s1":                                      {"td_1", "n1", "s1"},
		"spiffe://cluster.local/ns/" + strings.Repeat("a", 63) + "/sa/x": {"cluster.local", strings.Repeat("a", 63), "x"},
	}
	for s, want := range good {
		got, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if got != want || got.String() != s || got.URL().String() != s {
			t.Errorf("Parse(%q) = %#v (String %q, URL %q); want %#v", s, got, got.String(), got.URL(), want)
		}
	}
	bad := map[string]string{
		"":                                                               "not a SPIFFE ID",
		"https://cluster.local/ns/a/sa/b":                                "not a SPIFFE ID",
		"spiffe://Cluster.local/ns/a/sa/b":                               "not a SPIFFE ID",
		"spiffe:///ns/a/sa/b":                                            "not a SPIFFE ID",
		"spiffe://cluster.local":                                         "path must be",
		"spiffe://cluster.local/ns/a":                                    "path must be",
		"spiffe://cluster.local/ns/a/sa/b/c":                             "path must be",
		"spiffe://cluster.local/sa/b/ns/a":                               "path must be",
		"spiffe://cluster.local/ns/a/sa/b/":                              "not a SPIFFE ID",
		"spiffe://cluster.local/ns//sa/b":                                "not a SPIFFE ID",
		"spiffe://cluster.local/ns/A/sa/b":                               "namespace",
		"spiffe://cluster.local/ns/a.b/sa/c":                             "namespace",
		"spiffe://cluster.local/ns/-a/sa/b":                              "namespace",
		"spiffe://cluster.local/ns/a/sa/B":                               "service account",
		"spiffe://cluster.local/ns/a/sa/b_c":                             "service account",
		"spiffe://cluster.local/ns/a/sa/..":                              "not a SPIFFE ID",
		"spiffe://cluster.local/ns/a/sa/b?x=1":                           "not a SPIFFE ID",
		"spiffe://cluster.local/ns/a/sa/b#f":                             "not a SPIFFE ID",
		"spiffe://u@cluster.local/ns/a/sa/b":                             "not a SPIFFE ID",
		"spiffe://cluster.local:80/ns/a/sa/b":                            "not a SPIFFE ID",
		"spiffe://cluster.local/ns/" + strings.Repeat("a", 64) + "/sa/x": "at most 63",
	}
	for s, want := range bad {
		_, err := Parse(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v; want an error containing %q", s, err, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New("", "a", "b"); err == nil || !strings.Contains(err.Error(), "trust domain is empty") {
		t.Errorf("empty trust domain: %v", err)
	}
	if _, err := New("spiffe://cluster.local", "a", "b"); err == nil {
		t.Error("trust domain given as a SPIFFE ID was accepted")
	}
	id, err := New(DefaultTrustDomain, "default", "web")
	if err != nil || id.String() != "spiffe://cluster.local/ns/default/sa/web" {
		t.Errorf("New = %v, %v", id, err)
	}
	if (ID{}).String() != "" || !(ID{}).IsZero() {
		t.Error("zero ID is not empty")
	}
}

func TestFromURIs(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	if _, err := FromURIs(nil); err == nil || !strings.Contains(err.Error(), "no URI SAN") {
		t.Errorf("no URIs: %v", err)
	}
	two := []*url.URL{u("spiffe://cluster.local/ns/a/sa/b"), u("spiffe://cluster.local/ns/a/sa/c")}
	if _, err := FromURIs(two); err == nil || !strings.Contains(err.Error(), "2 URI SANs") {
		t.Errorf("two URIs: %v", err)
	}
	id, err := FromURIs([]*url.URL{u("spiffe://cluster.local/ns/a/sa/b")})
	if err != nil || id != (ID{"cluster.local", "a", "b"}) {
		t.Errorf("one URI: %v, %v", id, err)
	}
}

func TestTextRoundTrip(t *testing.T) {
	var id ID
	if err := id.UnmarshalText([]byte("spiffe://cluster.local/ns/a/sa/b")); err != nil {
		t.Fatal(err)
	}
	b, _ := id.MarshalText()
	if string(b) != "spiffe://cluster.local/ns/a/sa/b" {
		t.Errorf("MarshalText = %q", b)
	}
	if err := id.UnmarshalText(nil); err != nil || !id.IsZero() {
		t.Errorf("empty text: %v, %v", id, err)
	}
}

// FuzzParse checks that Parse never panics, that whatever it accepts
// round-trips exactly through String and URL, and validates.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/default/sa/web", "spiffe://a/ns/b/sa/c.d", "spiffe://x/ns/y", "spiffe://td/ns/a/sa/b/", "", "spiffe://%41/ns/a/sa/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, id.String())
		}
		if id.URL().String() != s {
			t.Fatalf("Parse(%q).URL() = %q", s, id.URL())
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid ID: %v", s, err)
		}
		again, err := FromURIs([]*url.URL{id.URL()})
		if err != nil || again != id {
			t.Fatalf("FromURIs(URL(%q)) = %v, %v", s, again, err)
		}
	})
}
