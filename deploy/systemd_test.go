package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unit is a systemd unit file: section -> key -> values, in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value in a section", n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) == 0 {
		t.Errorf("[%s] %s is not set", section, key)
		return ""
	}
	return v[len(v)-1]
}

// buildNode builds lease-node for the tests that run it.
func buildNode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lease-node")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/lease-node").CombinedOutput()
	if err != nil {
		t.Fatalf("go build lease-node: %v\n%s", err, out)
	}
	return bin
}

// TestSystemdUnit: the unit starts lease-node as Type=notify (the node
// sends READY=1, see integration's TestSystemdNotify), keeps its state in
// the StateDirectory the data dir names, reads its settings from the
// EnvironmentFile, restarts on failure and is hardened.
func TestSystemdUnit(t *testing.T) {
	data, err := File("systemd/lease-node.service")
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, data)
	want := map[string]string{
		"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "User": "leasekeeper",
		"StateDirectory": "leasekeeper", "ConfigurationDirectory": "leasekeeper",
		"EnvironmentFile": "/etc/leasekeeper/lease-node.env", "ExecStart": "/usr/local/bin/lease-node",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"SystemCallErrorNumber": "EPERM",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	env := map[string]string{}
	for _, e := range u["Service"]["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	if env["LEASE_NODE_DATA_DIR"] != "/var/lib/"+u.one(t, "Service", "StateDirectory") {
		t.Errorf("LEASE_NODE_DATA_DIR=%q is not the StateDirectory", env["LEASE_NODE_DATA_DIR"])
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}
}

// TestSystemdEnvironmentFile: lease-node reads every setting of the
// example environment file (it ignores a LEASE_NODE_ variable that names
// no flag, so a misspelt one would pass unseen).
func TestSystemdEnvironmentFile(t *testing.T) {
	data, err := File("systemd/lease-node.env")
	if err != nil {
		t.Fatal(err)
	}
	unitData, err := File("systemd/lease-node.service")
	if err != nil {
		t.Fatal(err)
	}
	env := append([]string{"PATH=" + os.Getenv("PATH")}, parseUnit(t, unitData)["Service"]["Environment"]...)
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "LEASE_NODE_") {
			t.Fatalf("line %q: want LEASE_NODE_<FLAG>=value", line)
		}
		keys = append(keys, k)
		env = append(env, line)
	}
	cmd := exec.Command(buildNode(t), "--print-config")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lease-node --print-config with the unit's environment: %v\n%s", err, out)
	}
	for _, k := range append(keys, "LEASE_NODE_DATA_DIR", "LEASE_NODE_PROFILE") {
		flag := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "LEASE_NODE_")), "_", "-")
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, flag+": ") {
				found = true
				if !strings.HasSuffix(line, "# environment") {
					t.Errorf("--%s did not come from %s: %s", flag, k, line)
				}
			}
		}
		if !found {
			t.Errorf("%s: lease-node has no flag --%s", k, flag)
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the unit, with
// ExecStart pointing at a freshly built lease-node (verify checks that it
// exists). A warning fails the test as an error does. Without
// systemd-analyze the test is skipped, except in CI.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing (apt-get install systemd)")
		}
		t.Skip("systemd-analyze not installed (apt-get install systemd): the unit is not verified")
	}
	data, err := File("systemd/lease-node.service")
	if err != nil {
		t.Fatal(err)
	}
	bin := buildNode(t)
	unit := filepath.Join(t.TempDir(), "lease-node.service")
	data = bytes.Replace(data, []byte("ExecStart=/usr/local/bin/lease-node"), []byte("ExecStart="+bin), 1)
	if err := os.WriteFile(unit, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check does catch a mistake.
	bad := bytes.Replace(data, []byte("Restart=on-failure"), []byte("Restart=on-failure\nRestartt=always"), 1)
	if err := os.WriteFile(unit, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", unit).CombinedOutput(); !bytes.Contains(out, []byte("Restartt")) {
		t.Errorf("systemd-analyze verify of a unit with an unknown key said %q", out)
	}
}
