package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// startSingle starts a one-node cluster with extra flags.
func startSingle(t *testing.T, extra ...string) *cluster {
	t.Helper()
	ports := freePorts(t, 2)
	dir := t.TempDir()
	p := &proc{id: "r1", grpc: ports[0], raft: ports[1], dataDir: filepath.Join(dir, "r1"), logPath: filepath.Join(dir, "r1.log")}
	p.args = append([]string{"--id", p.id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
		"--bootstrap", "--peers", "r1=" + p.raft}, extra...)
	c := &cluster{t: t, procs: []*proc{p}}
	c.start(p)
	t.Cleanup(func() { c.stop(p, 9) })
	return c
}

// saveBackup saves a backup through cl into a file and returns its path.
func saveBackup(t *testing.T, cl *client.Client) string {
	t.Helper()
	stream, err := cl.Cluster().Snapshot(ctxT(t, 10*time.Second), &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("snapshot stream: %v", err)
		}
		backup.Write(chunk.Data)
	}
	file := filepath.Join(t.TempDir(), "backup.snap")
	if err := os.WriteFile(file, backup.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestBackupAndRestore(t *testing.T) {
	src := startCluster(t, 3)
	src.leader(15 * time.Second)
	cl := src.client()
	want := map[string]*pb.Lease{}
	for _, name := range []string{"alpha", "beta", "gamma"} {
		a, err := cl.Acquire(ctxT(t, 10*time.Second), "team-a", name, "holder-"+name, time.Hour, time.Minute, map[string]string{"app": name})
		if err != nil {
			t.Fatal(err)
		}
		want[name] = a.Lease
	}
	if _, err := cl.Release(ctxT(t, 10*time.Second), "team-a", "gamma", "holder-gamma", want["gamma"].FencingToken); err != nil {
		t.Fatal(err)
	}
	want["gamma"].HolderIdentity = ""

	// Save a backup through a follower (it relays the leader's stream).
	file := saveBackup(t, cl)
	backup, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	// A corrupt backup is refused with a clear error before the node starts.
	bad := append([]byte(nil), backup...)
	bad[len(bad)/2] ^= 0x01
	badFile := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 2)
	out, err := exec.Command(binary, "--id", "x", "--data-dir", t.TempDir(), "--grpc-addr", ports[0], "--raft-addr", ports[1],
		"--bootstrap", "--restore", badFile).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "corrupt snapshot") {
		t.Fatalf("corrupt backup: exit %v, output %q; want exit 2 naming a corrupt snapshot", err, out)
	}

	// Restore into a fresh single node: the same table.
	// It serves nothing before the backup is in place: a write answered
	// earlier would be replaced by the backup, acknowledged and lost.
	dst := startSingle(t, "--restore", file)
	dcl := dst.client()
	deadline := time.Now().Add(20 * time.Second)
	var got *pb.ListResponse
	for {
		got, err = dcl.List(ctxT(t, 2*time.Second), &pb.ListRequest{Namespace: "team-a"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored node did not serve: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling another process, closely: the window is short
	}
	if len(got.Leases) != 3 {
		t.Fatalf("the restoring node answered with %d leases before the backup was in place", len(got.Leases))
	}
	for _, l := range got.Leases {
		w := want[l.Name]
		if l.HolderIdentity != w.HolderIdentity || l.FencingToken != w.FencingToken || l.Labels["app"] != l.Name {
			t.Errorf("restored %s: holder %q token %d labels %v, want %q %d", l.Name, l.HolderIdentity, l.FencingToken, l.Labels, w.HolderIdentity, w.FencingToken)
		}
	}
	// Tokens keep rising after a restore.
	a, err := dcl.Acquire(ctxT(t, 10*time.Second), "team-a", "gamma", "new", time.Minute, 0, nil)
	if err != nil || !a.Acquired || a.Lease.FencingToken <= want["gamma"].FencingToken {
		t.Fatalf("acquire after restore: %v %+v", err, a.GetLease())
	}
}

// A backup cannot know the tokens its cluster issued after it was taken,
// and a fenced resource may have seen them. The restored cluster must
// issue none of them again, nor after a restart.
func TestRestoreNeverReissuesTokens(t *testing.T) {
	src := startSingle(t)
	cl := src.client()
	a, err := cl.Acquire(ctxT(t, 10*time.Second), "team-a", "db", "a", time.Hour, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	backedUp := a.Lease.FencingToken
	file := saveBackup(t, cl)
	// After the backup, db changes hands a few times.
	holder, token := "a", backedUp
	var after []uint64
	for i := range 5 {
		if _, err := cl.Release(ctxT(t, 10*time.Second), "team-a", "db", holder, token); err != nil {
			t.Fatal(err)
		}
		holder = fmt.Sprintf("b%d", i)
		r, err := cl.Acquire(ctxT(t, 10*time.Second), "team-a", "db", holder, time.Hour, 0, nil)
		if err != nil || !r.Acquired {
			t.Fatalf("acquire by %s after the backup: %v %+v", holder, err, r.GetLease())
		}
		token = r.Lease.FencingToken
		after = append(after, token)
	}
	highest := slices.Max(after)

	dst := startSingle(t, "--restore", file)
	dcl := dst.client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, err := dcl.Get(ctxT(t, 2*time.Second), "team-a", "db", false)
		if err == nil && g.Lease.HolderIdentity == "a" && g.Lease.FencingToken == backedUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored node did not serve the backup: %v %v", err, g)
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
	// The backup's holder gives db up and a new one takes it, as after a
	// disaster; then fresh leases.
	if _, err := dcl.Release(ctxT(t, 10*time.Second), "team-a", "db", "a", backedUp); err != nil {
		t.Fatal(err)
	}
	newHoldings := func(when string, names ...string) {
		t.Helper()
		for _, name := range names {
			r, err := dcl.Acquire(ctxT(t, 20*time.Second), "team-a", name, "c", time.Hour, 0, nil)
			if err != nil || !r.Acquired {
				t.Fatalf("acquire %s %s: %v %+v", name, when, err, r.GetLease())
			}
			if got := r.Lease.FencingToken; got <= highest {
				t.Errorf("%s: token of %s is %d, not above %d, the highest issued after the backup (%v)", when, name, got, highest, after)
			}
		}
	}
	newHoldings("after the restore", "db", "x1", "x2")

	// Restarted (without --restore: its data dir holds the new cluster),
	// the node keeps the raised counter.
	p := dst.procs[0]
	dst.stop(p, syscall.SIGTERM)
	p.args = slices.DeleteFunc(p.args, func(a string) bool { return a == "--restore" || a == file })
	dst.start(p)
	newHoldings("after a restart", "y1", "y2")
}
