package config

import (
	"crypto/sha256"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/fanout"
	"github.com/rtbh/rtbh/feed/api"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current output (review the diff!)")

// exampleConfig is the documented example shipped in deploy/.
const exampleConfig = "../../../../deploy/rtbhd.yaml"

// cmpOpts compares netip values by their comparable representation.
var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/bad/*.yaml files")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			cfg, err := Load(f)
			if err == nil {
				t.Fatalf("Load succeeded, want errors; got %+v", cfg)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want config.Errors: %v", err, err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("errors differ from %s (-want +got):\n%s", golden, diff)
			}
			if n := strings.Count(got, "\n"); n != len(errs) {
				t.Errorf("%d lines for %d errors", n, len(errs))
			}
			for _, e := range errs {
				if e.Path == "" && !strings.Contains(name, "syntax") && !strings.Contains(name, "documents") {
					t.Errorf("error without a key path: %v", e)
				}
			}
		})
	}
}

func TestMinimalGetsDefaults(t *testing.T) {
	got, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Spelled out from SPEC.md, not from defaults(), so that a changed
	// default fails here.
	want := &Config{
		Store: Store{Driver: "sqlite", Path: "rtbhd.db", Retention: 720 * time.Hour},
		HA:    HA{Instance: hostname()},
		BGP: BGP{
			ASN:             64500,
			RouterID:        netip.MustParseAddr("192.0.2.254"),
			ListenAddress:   "0.0.0.0",
			ListenPort:      179,
			NextHopV4:       netip.MustParseAddr("192.0.2.1"),
			NextHopV6:       netip.MustParseAddr("100::1"),
			GracefulRestart: true,
			// SPEC "Safety defaults and limits".
			GracefulRestartTime: 120 * time.Second,
		},
		Policy: Policy{
			MaxActive:      10000,
			DefaultTTL:     time.Hour,
			MaxTTL:         168 * time.Hour,
			MinPrefixLenV4: 32,
			MinPrefixLenV6: 128,
		},
		// The SPEC's default listen address; agents are set, as they must
		// be with it.
		SFlow: SFlow{Listen: "0.0.0.0:6343", Agents: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/32")}, ReceiveBuffer: 8 << 20},
		Detector: Detector{
			Window:            10 * time.Minute,
			MaxTrackedSources: 1000000,
			Rules: []Rule{{
				Name:            "smtp-fanout",
				Protocol:        "tcp",
				DstPorts:        []uint16{25},
				MinDestinations: 20,
				MinPackets:      1000,
				TTL:             time.Hour,
				Action:          "blackhole",
				// SPEC "Detection at real sampling rates".
				MinSamples:       3,
				SkipServers:      true,
				ServerMinClients: 3,
			}},
			// SPEC "Detection at real sampling rates".
			ReportTrust:  0.5,
			ServerMemory: 168 * time.Hour,
		},
		Reports: Reports{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour, MinReporters: 2, MaxTrackedAddresses: 1000000},
		API:     API{Listen: "127.0.0.1:50051"},
		Metrics: Metrics{Listen: "127.0.0.1:9180"},
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("minimal config (-want +got):\n%s", diff)
	}
}

func TestFull(t *testing.T) {
	got, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	want := &Config{
		Store: Store{Driver: "sqlite", Path: "/var/lib/rtbhd/rtbhd.db", Retention: 168 * time.Hour},
		HA:    HA{Instance: "rs1.example"},
		BGP: BGP{
			ASN:                 4200000000,
			RouterID:            netip.MustParseAddr("10.0.0.1"),
			ListenAddress:       "::",
			ListenPort:          1179,
			NextHopV4:           netip.MustParseAddr("192.0.2.66"),
			NextHopV6:           netip.MustParseAddr("2001:db8:ffff::1"),
			GracefulRestartTime: 60 * time.Second,
			LongLivedStaleTime:  24 * time.Hour,
			Neighbors: []Neighbor{
				{
					Address:          netip.MustParseAddr("10.0.0.2"),
					ASN:              4200000001,
					Role:             bgp.RoleBorder,
					Port:             11179,
					Passive:          true,
					Multihop:         2,
					Password:         "s3cret",
					Communities:      []string{"65535:666", "64500:9999"},
					LargeCommunities: []string{"4200000000:666:0"},
					MaxRoutes:        500,
					FlowSpec:         true,
					MaxFlowSpec:      40,
				},
				{
					Address: netip.MustParseAddr("2001:db8::2"),
					ASN:     64511,
					Role:    bgp.RolePeer,
					Port:    179,
				},
			},
		},
		Policy: Policy{
			OwnPrefixes:    pfx("198.51.100.0/24", "2001:db8::/32"),
			NeverBlackhole: pfx("198.51.100.53/32", "198.51.100.0/30"),
			MaxActive:      20,
			DefaultTTL:     30 * time.Minute,
			MaxTTL:         48 * time.Hour,
			MinPrefixLenV4: 24,
			MinPrefixLenV6: 64,
		},
		SFlow: SFlow{Listen: "[::1]:16343", Agents: pfx("192.0.2.11/32", "10.1.0.0/16"), ReceiveBuffer: 1 << 20},
		Detector: Detector{
			SubscriberPrefixes: pfx("198.51.100.128/25"),
			Window:             5 * time.Minute,
			MaxTrackedSources:  5000,
			ReportTrust:        0.25,
			ServerMemory:       72 * time.Hour,
			Rules: []Rule{
				{
					Name:             "smtp-fanout",
					Protocol:         ProtocolTCP,
					DstPorts:         []uint16{25, 587},
					MinDestinations:  50,
					MinPackets:       0,
					Exempt:           pfx("198.51.100.25/32"),
					TTL:              2 * time.Hour,
					Action:           fanout.ActionLog,
					MinSamples:       5,
					ServerMinClients: 4,
				},
				{
					// Unset keys of a rule take the smtp-fanout values.
					Name:             "telnet-worm",
					Protocol:         ProtocolUDP,
					DstPorts:         []uint16{23},
					MinDestinations:  20,
					MinPackets:       1000,
					TTL:              time.Hour,
					Action:           fanout.ActionBlackhole,
					MinSamples:       3,
					SkipServers:      true,
					ServerMinClients: 3,
				},
			},
		},
		Reports: Reports{Window: 12 * time.Hour, Threshold: 2.5, TTL: 3 * time.Hour, MinReporters: 3, MaxTrackedAddresses: 50000},
		API: API{
			Listen: "0.0.0.0:50052",
			TLS:    TLS{Cert: "/etc/rtbhd/server.crt", Key: "/etc/rtbhd/server.key", ClientCA: "ca.crt"},
			Clients: []Client{
				{Name: "noc", Role: domain.RoleOperator, TokenSHA256: [32]byte{31: 1}, HasToken: true, Trust: 0.5, Rate: 10},
				{
					Name: "partner-a", Role: domain.RolePartner, CertName: "rtbh.partner-a.example",
					Prefixes: pfx("203.0.113.0/24"), Trust: 0.25, Rate: 50,
				},
			},
		},
		Metrics: Metrics{Listen: ""},
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("full config (-want +got):\n%s", diff)
	}
}

func TestRules(t *testing.T) {
	base := "bgp: {asn: 64500, router_id: 192.0.2.254, neighbors: []}\nsflow: {listen: 127.0.0.1:6343}\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"absent", "", []string{"smtp-fanout"}},
		{"section without rules", "detector: {window: 1m}\n", []string{"smtp-fanout"}},
		{"explicit empty list", "detector: {rules: []}\n", nil},
		{"null", "detector:\n  rules:\n", nil},
		{"replaced", "detector: {rules: [{name: a}, {name: b}]}\n", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base + tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range cfg.Detector.Rules {
				got = append(got, r.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("rule names (-want +got):\n%s", diff)
			}
		})
	}
}

// An empty sflow.agents accepts only loopback agents: it is refused
// unless sflow.listen is a loopback address (testdata/bad/sflow-* hold the
// refusals).
func TestSFlowAgents(t *testing.T) {
	base := "bgp: {asn: 64500, router_id: 192.0.2.254, neighbors: []}\n"
	for _, tc := range []struct {
		name, yaml string
		want       error
	}{
		{"loopback, no agents", "sflow: {listen: 127.0.0.1:6343}\n", nil},
		{"loopback, agents []", "sflow: {listen: 127.0.0.1:6343, agents: []}\n", nil},
		{"ipv6 loopback", "sflow: {listen: \"[::1]:6343\"}\n", nil},
		{"localhost", "sflow: {listen: localhost:6343}\n", nil},
		{"default listen, agents listed", "sflow: {agents: [192.0.2.11, 10.1.0.0/16]}\n", nil},
		{"any address, agents listed", "sflow: {listen: \"[::]:6343\", agents: [\"2001:db8::11\"]}\n", nil},
		{"no sflow section", "", &Error{Path: "sflow.agents", Msg: "required when sflow.listen is not a loopback address"}},
		{"agents []", "sflow:\n  listen: 0.0.0.0:6343\n  agents: []\n", &Error{Path: "sflow.agents", Line: 4,
			Msg: "required when sflow.listen is not a loopback address"}},
		{"bad listen: reported alone", "sflow: {listen: nowhere}\n", &Error{Path: "sflow.listen", Line: 2,
			Msg: `"nowhere": not a host:port address`}},
		{"bad agent: reported alone", "sflow: {agents: [192.0.2.300]}\n", &Error{Path: "sflow.agents[0]", Line: 2,
			Msg: `"192.0.2.300" is not an address or prefix`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base + tc.yaml))
			var errs Errors
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.want == nil:
			case !errors.As(err, &errs) || len(errs) != 1:
				t.Fatalf("Parse = %v, want the one error %v", err, tc.want)
			default:
				if diff := cmp.Diff(tc.want, errs[0]); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestExample(t *testing.T) {
	cfg, err := Load(exampleConfig)
	if err != nil {
		t.Fatalf("the shipped example does not load:\n%v", err)
	}
	// The example must run unprivileged on a developer machine and dial
	// nobody.
	if cfg.BGP.ListenPort < 1024 {
		t.Errorf("bgp.listen_port = %d, want an unprivileged port", cfg.BGP.ListenPort)
	}
	for _, nb := range cfg.BGP.Neighbors {
		if !nb.Passive {
			t.Errorf("neighbor %s is not passive: the example would dial out", nb.Address)
		}
	}
	for key, hp := range map[string]string{"api.listen": cfg.API.Listen, "sflow.listen": cfg.SFlow.Listen, "metrics.listen": cfg.Metrics.Listen} {
		if !api.IsLoopback(hp) {
			t.Errorf("%s = %q, want a loopback address", key, hp)
		}
	}
	if filepath.IsAbs(cfg.Store.Path) {
		t.Errorf("store.path = %q, want a path in the working directory", cfg.Store.Path)
	}
	// The documented token must match its hash.
	var noc *Client
	for i := range cfg.API.Clients {
		if cfg.API.Clients[i].Name == "noc" {
			noc = &cfg.API.Clients[i]
		}
	}
	if noc == nil || noc.Role != domain.RoleOperator || !noc.HasToken {
		t.Fatalf("no operator client noc with a token: %+v", cfg.API.Clients)
	}
	if noc.TokenSHA256 != sha256.Sum256([]byte("change-me")) {
		t.Errorf("noc's token_sha256 is not the SHA-256 of the documented token change-me")
	}
	raw, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "change-me") {
		t.Errorf("the example does not document its token")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{Path: "bgp.neighbors[1].address", Line: 12, Msg: "bad"}, "bgp.neighbors[1].address: line 12: bad"},
		{Error{Path: "bgp.asn", Msg: "bad"}, "bgp.asn: bad"},
		{Error{Line: 3, Msg: "bad"}, "line 3: bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/minimal.yaml", "testdata/full.yaml", exampleConfig} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, p := range bad {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v: want exactly one", cfg != nil, err)
		}
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error is not a non-empty Errors: %#v", err)
			}
			return
		}
		// Properties every accepted config has.
		if cfg.BGP.ASN == 0 || !cfg.BGP.RouterID.Is4() {
			t.Fatalf("accepted config with asn %d router_id %s", cfg.BGP.ASN, cfg.BGP.RouterID)
		}
		if cfg.Policy.DefaultTTL <= 0 || cfg.Policy.DefaultTTL > cfg.Policy.MaxTTL {
			t.Fatalf("accepted default_ttl %s max_ttl %s", cfg.Policy.DefaultTTL, cfg.Policy.MaxTTL)
		}
		if cfg.API.TLS.Cert == "" && !api.IsLoopback(cfg.API.Listen) {
			t.Fatalf("accepted plaintext API on %q", cfg.API.Listen)
		}
		if len(cfg.SFlow.Agents) == 0 && !api.IsLoopback(cfg.SFlow.Listen) {
			t.Fatalf("accepted sflow.listen %q without agents", cfg.SFlow.Listen)
		}
		for _, nb := range cfg.BGP.Neighbors {
			if !nb.Address.IsValid() || nb.ASN == 0 || (nb.Role != bgp.RoleBorder && nb.Role != bgp.RolePeer) {
				t.Fatalf("accepted neighbor %+v", nb)
			}
		}
	})
}

// The HA example's two configs are valid and differ only where two route
// servers must: name and addresses.
func TestHAExample(t *testing.T) {
	var cfgs []*Config
	for _, f := range []string{"rtbhd-a.yaml", "rtbhd-b.yaml"} {
		cfg, err := Parse(haExample(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if cfg.Store.Driver != DriverPostgres || cfg.Store.DSN == "" {
			t.Fatalf("%s: store %+v, want postgres with a dsn", f, cfg.Store)
		}
		cfgs = append(cfgs, cfg)
	}
	a, b := cfgs[0], cfgs[1]
	a.Store.PasswordFile, b.Store.PasswordFile = "", "" // each read from its own temp dir here
	if a.HA.Instance == b.HA.Instance || a.BGP.RouterID == b.BGP.RouterID {
		t.Fatalf("the two route servers share ha.instance %q or router_id %s", a.HA.Instance, a.BGP.RouterID)
	}
	if diff := cmp.Diff(a.Store, b.Store); diff != "" {
		t.Fatalf("the two route servers use different stores (-a +b):\n%s", diff)
	}
	if diff := cmp.Diff(a.BGP.Neighbors, b.BGP.Neighbors, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Fatalf("the two route servers peer with different routers (-a +b):\n%s", diff)
	}
}

// haExample reads a config of deploy/ha with its password file pointed at
// a readable file (the example names /etc/rtbhd/pgpassword).
func haExample(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../../../deploy/ha", name))
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pgpassword")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(data), "/etc/rtbhd/pgpassword", pw))
}
