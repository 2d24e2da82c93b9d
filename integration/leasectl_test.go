package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ctl runs leasectl against the cluster and returns its output and exit code.
func (c *cluster) ctl(args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(ctlBinary, append([]string{"--endpoints", strings.Join(c.endpoints(), ",")}, args...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	c.t.Fatalf("leasectl %v: %v", args, err)
	return "", -1
}

func TestLeasectlAgainstCluster(t *testing.T) {
	c := startCluster(t, 3)
	c.leader(15 * time.Second)
	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"acquire", "db", "--holder", "alice", "--duration", "30s"}, 0, "acquired default/db holder=alice"},
		{[]string{"acquire", "db", "--holder", "bob", "--duration", "30s"}, 3, "held default/db holder=alice"},
		{[]string{"renew", "db", "--holder", "alice", "--token", "1"}, 0, "renewed"},
		{[]string{"renew", "db", "--holder", "bob", "--token", "1"}, 1, "stale"},
		{[]string{"get", "leases", "-o", "wide"}, 0, "TRANSITIONS"},
		{[]string{"cluster", "health"}, 0, "SERVING"},
		{[]string{"member", "list"}, 0, "voter"},
		{[]string{"cluster", "transfer-leader"}, 0, "leader now n"},
		{[]string{"release", "db", "--holder", "alice", "--token", "1"}, 0, "released"},
		{[]string{"acquire", "db", "--holder", "bob", "--duration", "30s"}, 0, "token=2"},
		{[]string{"acquire", "BAD", "--holder", "bob"}, 1, "RFC 1123 subdomain"},
		{[]string{"acquire", "80807133.tutorial.kubebuilder.io", "--holder", "bob", "--duration", "30s"}, 0, "acquired default/80807133.tutorial.kubebuilder.io holder=bob"},
		{[]string{"get", "lease", "80807133.tutorial.kubebuilder.io"}, 0, "80807133.tutorial.kubebuilder.io"},
		{[]string{"member", "remove", "nobody"}, 1, "unknown member"},
	}
	for _, s := range steps {
		out, code := c.ctl(s.args...)
		if code != s.wantCode || !strings.Contains(out, s.wantOut) {
			t.Fatalf("leasectl %s: exit %d, output %q; want exit %d and %q", strings.Join(s.args, " "), code, out, s.wantCode, s.wantOut)
		}
	}
	out, code := c.ctl("get", "lease", "db", "-o", "json")
	var lease map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &lease) != nil || lease["holderIdentity"] != "bob" || lease["fencingToken"] != float64(2) {
		t.Fatalf("get -o json: exit %d, %s", code, out)
	}
	file := filepath.Join(t.TempDir(), "backup.snap")
	if out, code := c.ctl("snapshot", "save", file); code != 0 || !strings.Contains(out, "2 leases") {
		t.Fatalf("snapshot save: exit %d, %s", code, out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		t.Fatalf("backup file: %v", err)
	}
}
