package iptables

import (
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr []string // substrings; empty means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"full", func(c *Config) {
			c.SkipInboundPorts = []string{"22", "8000:8010", " 9000-9001 "}
			c.SkipOutboundPorts = []string{"443", "65535"}
			c.SkipSubnets = []string{"10.0.0.0/8", "fd00::/8", "192.168.1.7/32"}
			c.Mode = ModeLegacy
			c.IPv6 = true
		}, nil},
		{"inbound port zero", func(c *Config) { c.InboundPort = 0 }, []string{"--inbound-port", "0"}},
		{"outbound port too big", func(c *Config) { c.OutboundPort = 70000 }, []string{"--outbound-port", "70000"}},
		{"same ports", func(c *Config) { c.OutboundPort = c.InboundPort }, []string{"--outbound-port", "must differ"}},
		{"root uid", func(c *Config) { c.ProxyUID = 0 }, []string{"--proxy-uid"}},
		{"bad inbound port", func(c *Config) { c.SkipInboundPorts = []string{"http"} }, []string{"--skip-inbound-ports", `"http"`}},
		{"bad inbound range", func(c *Config) { c.SkipInboundPorts = []string{"8010:8000"} }, []string{"--skip-inbound-ports", "8010:8000"}},
		{"bad outbound range", func(c *Config) { c.SkipOutboundPorts = []string{"1:70000"} }, []string{"--skip-outbound-ports", "70000"}},
		{"list in one item", func(c *Config) { c.SkipOutboundPorts = []string{"22,80"} }, []string{"--skip-outbound-ports"}},
		{"bad cidr", func(c *Config) { c.SkipSubnets = []string{"10.0.0.0/33"} }, []string{"--skip-subnets", "10.0.0.0/33"}},
		{"bare address", func(c *Config) { c.SkipSubnets = []string{"10.1.2.3"} }, []string{"--skip-subnets", "not a CIDR"}},
		{"bad mode", func(c *Config) { c.Mode = "iptables" }, []string{"--mode", `"iptables"`}},
		{"empty mode", func(c *Config) { c.Mode = "" }, []string{"--mode"}},
		{"several", func(c *Config) { c.Mode = "x"; c.InboundPort = -1 }, []string{"--mode", "--inbound-port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error mentioning %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in   string
		want PortRange
		str  string
		ok   bool
	}{
		{"4567", PortRange{4567, 4567}, "4567", true},
		{"8000:8010", PortRange{8000, 8010}, "8000:8010", true},
		{"8000-8010", PortRange{8000, 8010}, "8000:8010", true},
		{" 1:65535 ", PortRange{1, 65535}, "1:65535", true},
		{"5:5", PortRange{5, 5}, "5", true},
		{"", PortRange{}, "", false},
		{"0", PortRange{}, "", false},
		{"65536", PortRange{}, "", false},
		{"-1", PortRange{}, "", false},
		{"+1", PortRange{}, "", false},
		{"10:", PortRange{}, "", false},
		{":10", PortRange{}, "", false},
		{"10:5", PortRange{}, "", false},
		{"1:2:3", PortRange{}, "", false},
		{"1-2-3", PortRange{}, "", false},
		{"0x10", PortRange{}, "", false},
		{"1_000", PortRange{}, "", false},
	}
	for _, tt := range tests {
		got, err := ParsePortRange(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParsePortRange(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if got != tt.want || (tt.ok && got.String() != tt.str) {
			t.Errorf("ParsePortRange(%q) = %v (%q), want %v (%q)", tt.in, got, got, tt.want, tt.str)
		}
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("22, 8000-8010,,443")
	if err != nil {
		t.Fatal(err)
	}
	want := []PortRange{{22, 22}, {8000, 8010}, {443, 443}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParsePorts = %v, want %v", got, want)
	}
	if _, err := ParsePorts("22,x"); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("ParsePorts(22,x) error = %v, want one naming \"x\"", err)
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, seed := range []string{"4567", "8000:8010", "1-2,3", " 22 , 80:90", "", ",", "0", "65536", "5:1", "1:2:3"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, list string) {
		ranges, err := ParsePorts(list)
		if err != nil {
			return
		}
		var again []string
		for _, r := range ranges {
			if r.First == 0 || r.First > r.Last {
				t.Fatalf("ParsePorts(%q) gave invalid range %+v", list, r)
			}
			again = append(again, r.String())
		}
		// Formatting and parsing again is lossless.
		round, err := ParsePorts(strings.Join(again, ","))
		if err != nil || !reflect.DeepEqual(round, ranges) {
			t.Fatalf("round trip of %q: %v, %v; want %v", list, round, err, ranges)
		}
	})
}

func TestBindFlags(t *testing.T) {
	var cfg Config
	fs := pflag.NewFlagSet("init", pflag.ContinueOnError)
	cfg.BindFlags(fs)
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("after BindFlags, cfg = %+v, want defaults %+v", cfg, DefaultConfig())
	}
	err := fs.Parse([]string{
		"--inbound-port=5143", "--outbound-port=5140", "--proxy-uid=1000",
		"--skip-inbound-ports=22,8000:8010", "--skip-outbound-ports=443",
		"--skip-subnets=10.0.0.0/8,fd00::/8", "--mode=legacy", "--ipv6",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		InboundPort: 5143, OutboundPort: 5140, ProxyUID: 1000,
		SkipInboundPorts: []string{"22", "8000:8010"}, SkipOutboundPorts: []string{"443"},
		SkipSubnets: []string{"10.0.0.0/8", "fd00::/8"}, Mode: ModeLegacy, IPv6: true,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("parsed cfg = %+v, want %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}
