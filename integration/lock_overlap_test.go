package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLeasectlLostLockDiesBeforeTheNextHolder runs `leasectl lock` with its
// default --grace and --kill-grace around a command that ignores SIGTERM,
// cuts the holder off from the cluster (it knows only one follower, which is
// stopped), and lets a second `leasectl lock` wait in the queue through the
// other nodes. The server hands the lock over when the first holding
// expires; by then the first command must have been killed: its last
// timestamp comes before the second command's first.
func TestLeasectlLostLockDiesBeforeTheNextHolder(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader(15 * time.Second)
	var cut *proc
	var others []string
	for _, p := range c.procs {
		if p != leader && cut == nil {
			cut = p
		} else {
			others = append(others, p.grpc)
		}
	}
	dir := t.TempDir()
	aLog, bLog := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")

	// The first holder writes a timestamp every 20ms until it is killed.
	var aErr bytes.Buffer
	a := exec.Command(ctlBinary, "--endpoints", cut.grpc, "--timeout", "2s", "lock", "job", "--ttl", "2s", "--identity", "a", "--",
		"bash", "-c", `trap "" TERM; while :; do echo "$EPOCHREALTIME" >> "$0"; sleep 0.02; done`, aLog)
	a.Stderr = &aErr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	aDone, aExited := waitProc(a)
	t.Cleanup(func() {
		_ = a.Process.Kill()
		<-aExited
	})
	waitCond(t, 10*time.Second, "the first command to run", func() bool {
		_, err := os.Stat(aLog)
		return err == nil
	})

	cl := c.client(others...)
	var bErr bytes.Buffer
	b := exec.Command(ctlBinary, "--endpoints", strings.Join(others, ","), "lock", "job", "--identity", "b", "--",
		"bash", "-c", `echo "$EPOCHREALTIME" > "$0"`, bLog)
	b.Stderr = &bErr
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	bDone, bExited := waitProc(b)
	t.Cleanup(func() {
		_ = b.Process.Kill()
		<-bExited
	})
	waitCond(t, 10*time.Second, "the second holder to queue", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		g, err := cl.Get(ctx, "default", "job", false)
		return err == nil && slices.Contains(g.GetLease().GetWaiters(), "b")
	})

	// Cut the first holder off: its only node stops answering.
	if err := cut.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cut.cmd.Process.Signal(syscall.SIGCONT) })

	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("second leasectl: %v\nstderr: %s", err, bErr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("the second holder never ran\nfirst: %s\nsecond: %s", aErr.String(), bErr.String())
	}
	var aExit error
	select {
	case aExit = <-aDone:
	case <-time.After(40 * time.Second):
		t.Fatalf("the first leasectl never exited\nstderr: %s", aErr.String())
	}
	if code := exitCode(aExit); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("first leasectl exit %d, want 137: its command ignores SIGTERM\nstderr: %s", code, aErr.String())
	}
	aLast, bFirst := lastStamp(t, aLog), lastStamp(t, bLog)
	t.Logf("first command's last write %.3fs before the second command started", bFirst-aLast)
	if aLast >= bFirst {
		t.Fatalf("the first command still wrote at %.6f, after the second command started at %.6f\nfirst: %s", aLast, bFirst, aErr.String())
	}
}

// waitProc waits for cmd: done delivers its end once, exited is closed
// then (for cleanups, which may come after done was read).
func waitProc(cmd *exec.Cmd) (done <-chan error, exited <-chan struct{}) {
	d, e := make(chan error, 1), make(chan struct{})
	go func() {
		d <- cmd.Wait()
		close(e)
	}()
	return d, e
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// lastStamp reads the last $EPOCHREALTIME that a command wrote to path.
func lastStamp(t *testing.T, path string) float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		t.Fatalf("%s is empty", path)
	}
	v, err := strconv.ParseFloat(lines[len(lines)-1], 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// waitCond polls cond where the processes offer no event to wait on.
func waitCond(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
