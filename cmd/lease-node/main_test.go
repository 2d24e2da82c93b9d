package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
	"github.com/leasekeeper/leasekeeper/node"
)

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte("id: from-file\ngrpc-addr: 127.0.0.1:1\nheartbeat-timeout: 700ms\nexpiry-batch-size: 100\nelection-timeout: 800ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LEASE_NODE_GRPC_ADDR", "127.0.0.1:2")
	t.Setenv("LEASE_NODE_ELECTION_TIMEOUT", "900ms")
	var out bytes.Buffer
	o, err := parse([]string{"--config", file, "--profile", "production", "--insecure", "--election-timeout", "1s"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"file beats default", o.node.ID, "from-file"},
		{"env beats file", o.node.GRPCAddr, "127.0.0.1:2"},
		{"flag beats env and file", o.node.ElectionTimeout, time.Second},
		{"file beats profile", o.node.Leasing.ExpiryBatchSize, 100},
		{"profile beats default", o.server.MaxLeaseDuration, 5 * time.Minute},
		{"file value", o.node.HeartbeatTimeout, 700 * time.Millisecond},
		{"derived data dir", o.node.DataDir, "data/from-file"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestUnknownEnvironmentIsNamed: a LEASE_NODE_* variable that sets nothing
// (a misspelt setting) is listed for the startup warning; the settings'
// own variables, LEASE_NODE_ARGS and other prefixes are not.
func TestUnknownEnvironmentIsNamed(t *testing.T) {
	t.Setenv("LEASE_NODE_GRPC_ADDR", "127.0.0.1:2")
	t.Setenv("LEASE_NODE_ELECTON_TIMEOUT", "900ms")
	t.Setenv("LEASE_NODE_VERSION", "true")
	t.Setenv("LEASE_NODE_ARGS", "--enable-pprof")
	t.Setenv("LEASE_NODES", "3")
	var out bytes.Buffer
	o, err := parse([]string{"--id", "a"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"LEASE_NODE_ELECTON_TIMEOUT", "LEASE_NODE_VERSION"}
	if !slices.Equal(o.unknownEnv, want) {
		t.Fatalf("unknown variables %v, want %v", o.unknownEnv, want)
	}
}

// TestLeasingFlags: the expiry loop's settings and the negative control's
// fault reach the node's configuration.
func TestLeasingFlags(t *testing.T) {
	var out bytes.Buffer
	o, err := parse([]string{"--id", "a", "--expiry-propose-timeout", "300ms", "--unsafe-test-fault", "ignore-expire-doubt"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.node.Leasing.ProposeTimeout; got != 300*time.Millisecond {
		t.Errorf("ProposeTimeout = %v, want 300ms", got)
	}
	if got := o.node.Fault; got != node.FaultIgnoreExpireDoubt {
		t.Errorf("Fault = %q, want %q", got, node.FaultIgnoreExpireDoubt)
	}
}

// TestAdvertisedAddresses: a node that listens on one address and is
// reached at another (a proxy, a NAT) asks to join at the one it is
// reached at; without the flags it is reached where it listens. The
// environment sets them too.
func TestAdvertisedAddresses(t *testing.T) {
	var out bytes.Buffer
	o, err := parse([]string{"--id", "a", "--grpc-addr", "0.0.0.0:7001", "--raft-addr", "0.0.0.0:8001",
		"--grpc-advertise", "10.0.0.1:17001", "--raft-advertise", "10.0.0.1:18001"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	if r := joinRequest(o); r.GetRaftAddr() != "10.0.0.1:18001" || r.GetGrpcAddr() != "10.0.0.1:17001" || r.GetId() != "a" {
		t.Errorf("join request %v, want a at raft 10.0.0.1:18001, grpc 10.0.0.1:17001", r)
	}
	o, err = parse([]string{"--id", "a", "--grpc-addr", "127.0.0.1:7001", "--raft-addr", "127.0.0.1:8001"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	if r := joinRequest(o); r.GetRaftAddr() != "127.0.0.1:8001" || r.GetGrpcAddr() != "127.0.0.1:7001" {
		t.Errorf("join request %v without advertised addresses, want the listen addresses", r)
	}
	t.Setenv("LEASE_NODE_RAFT_ADVERTISE", "127.0.0.1:18001")
	t.Setenv("LEASE_NODE_GRPC_ADVERTISE", "127.0.0.1:17001")
	if o, err = parse([]string{"--id", "a"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if o.node.RaftAdvertise != "127.0.0.1:18001" || o.node.GRPCAdvertise != "127.0.0.1:17001" {
		t.Errorf("from the environment: raft %q, grpc %q", o.node.RaftAdvertise, o.node.GRPCAdvertise)
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("no-such-setting: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.snap")
	var b bytes.Buffer
	if err := fsm.New(nil).WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(backup, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	restore := []string{"--id", "a", "--data-dir", t.TempDir(), "--bootstrap", "--restore", backup}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no id", nil, "--id is required"},
		{"token floor without restore", []string{"--id", "a", "--restore-token-floor", "9"}, "needs --restore"},
		{"token floor leaving no tokens", append(restore, "--restore-token-floor", "18446744073709551615"), "--restore-token-floor"},
		{"unknown profile", []string{"--id", "a", "--profile", "fast"}, "want production, test or development"},
		{"unknown file key", []string{"--id", "a", "--config", bad}, `unknown setting "no-such-setting"`},
		{"bad peers", []string{"--id", "a", "--bootstrap", "--peers", "a"}, "not id=raftaddr"},
		{"lease timeout above heartbeat", []string{"--id", "a", "--leader-lease-timeout", "2s"}, "LeaderLeaseTimeout"},
		{"join and bootstrap", []string{"--id", "a", "--bootstrap", "--join", "x:1"}, "exclude each other"},
		{"unknown fault", []string{"--id", "a", "--unsafe-test-fault", "nope"}, "unknown fault"},
		{"advertised Raft address without a port", []string{"--id", "a", "--raft-advertise", "10.0.0.1"}, "RaftAdvertise"},
		{"advertised gRPC address on a wildcard", []string{"--id", "a", "--grpc-advertise", "0.0.0.0:7001"}, "GRPCAdvertise"},
		{"advertised Raft address unlike --peers", []string{"--id", "a", "--bootstrap", "--peers", "a=10.0.0.1:8001", "--raft-advertise", "10.0.0.9:8001"}, "RaftAdvertise is 10.0.0.9:8001"},
		{"expiry propose timeout not positive", []string{"--id", "a", "--expiry-propose-timeout", "0s"}, "ProposeTimeout must be > 0"},
		{"memory limit without a unit we know", []string{"--id", "a", "--memory-limit", "9 parsecs"}, "--memory-limit"},
		{"negative memory limit", []string{"--id", "a", "--memory-limit", "-1MiB"}, "--memory-limit"},
		{"default duration out of range", []string{"--id", "a", "--default-lease-duration", "48h"}, "DefaultLeaseDuration"},
		{"production without TLS", []string{"--id", "a", "--profile", "production"}, "refuses to serve without TLS"},
		{"auth without TLS", []string{"--id", "a", "--auth-mode", "token", "--auth-token-file", "t", "--auth-policy-file", "p"}, "needs TLS"},
		{"mtls without a CA", []string{"--id", "a", "--tls-cert", "c", "--tls-key", "k", "--auth-mode", "mtls", "--auth-policy-file", "p"}, "needs --tls-ca"},
		{"cert without key", []string{"--id", "a", "--tls-cert", "c"}, "go together"},
		{"raft TLS without a CA", []string{"--id", "a", "--tls-cert", "c", "--tls-key", "k", "--raft-tls"}, "--raft-tls needs --tls-ca"},
		{"production with auth and Raft in plain text", []string{"--id", "a", "--profile", "production", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca",
			"--auth-mode", "token", "--auth-token-file", "t", "--auth-policy-file", "p"}, "refuses auth with Raft in plain text"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := parse(tc.args, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPrintConfigShowsSources(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--id", "n1", "--profile", "test", "--print-config"}, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, want := range []string{`id: "n1"  # flag`, `max-lease-duration: "2m0s"  # profile test`, `raft-addr: "127.0.0.1:8001"  # default`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("print-config lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "0": 0, "1048576": 1 << 20, "900MiB": 900 << 20, "1GiB": 1 << 30, "512KB": 512e3, "2GB": 2e9, "64B": 64, "3KiB": 3 << 10,
	} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"MiB", "1.5GiB", "1TiB", "99999999999GiB", "x"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
}

// TestWarningsNameOpenSurfaces: a node started with surfaces open says so,
// and a locked-down one says nothing.
func TestWarningsNameOpenSurfaces(t *testing.T) {
	open := (&securityFlags{authMode: "none"}).warnings("10.0.0.1:7001", "127.0.0.1:8001")
	joined := strings.Join(open, "\n")
	for _, want := range []string{"auth is off", "not a loopback address", "TLS is off", "Raft runs in plain text"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings of an open node lack %q:\n%s", want, joined)
		}
	}
	closed := (&securityFlags{authMode: "mtls", cert: "c", key: "k", ca: "ca", raftTLS: true}).warnings("10.0.0.1:7001", "10.0.0.1:8001")
	if len(closed) != 0 {
		t.Errorf("warnings of a locked-down node: %q, want none", closed)
	}
	authNoRaftTLS := (&securityFlags{authMode: "token", cert: "c", key: "k"}).warnings("127.0.0.1:7001", "127.0.0.1:8001")
	if len(authNoRaftTLS) != 1 || !strings.Contains(authNoRaftTLS[0], "auth notwithstanding") {
		t.Errorf("warnings with auth on and Raft in plain text: %q", authNoRaftTLS)
	}
}

// TestVersion: --version prints the build and the formats the binary
// reads, needs no other flag, and cannot be switched on from the
// environment, where it would stop every node that inherits it.
func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := fmt.Sprintf("lease-node %s\nraft command version %d, snapshot format %d\n", buildinfo.Get(), fsm.CommandVersion, fsm.SnapshotFormat)
	if out.String() != want {
		t.Errorf("--version printed %q, want %q", out.String(), want)
	}
	t.Setenv("LEASE_NODE_VERSION", "true")
	o, err := parse([]string{"--id", "a"}, &out, &out)
	if err != nil || o == nil {
		t.Fatalf("LEASE_NODE_VERSION set: %v, want it ignored", err)
	}
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte("version: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parse([]string{"--id", "a", "--config", file}, &out, &out); err == nil || !strings.Contains(err.Error(), "command-line flag only") {
		t.Errorf("version in a config file: %v, want a command-line-only error", err)
	}
}

// TestReflectionFlag: reflection is on unless turned off, by flag or
// environment.
func TestReflectionFlag(t *testing.T) {
	var out bytes.Buffer
	tests := []struct {
		name string
		args []string
		env  string
		want bool
	}{
		{"default", nil, "", true},
		{"flag off", []string{"--grpc-reflection=false"}, "", false},
		{"env off", nil, "false", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("LEASE_NODE_GRPC_REFLECTION", tc.env)
			}
			o, err := parse(append([]string{"--id", "a"}, tc.args...), &out, &out)
			if err != nil {
				t.Fatal(err)
			}
			if o.server.Reflection != tc.want {
				t.Errorf("Reflection = %v, want %v", o.server.Reflection, tc.want)
			}
		})
	}
}
