package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

type holding struct {
	token      uint64
	start, end int64
	valid      bool
	proc       int
}

// TestMutexAcrossProcesses runs 8 contenders in 4 client processes on one
// fenced Mutex, kills the leader in the middle, and checks on this
// machine's clock that holdings never overlapped, that tokens rose with
// every holding, that every process got its turns, and that no holding was
// lost.
func TestMutexAcrossProcesses(t *testing.T) {
	c := startCluster(t, 3)
	c.leader(15 * time.Second)
	const procs, duration = 4, 10 * time.Second
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for i := 0; i < procs; i++ {
		cmd := exec.Command(contenderBinary, "--endpoints", strings.Join(c.endpoints(), ","),
			"--workers", "2", "--duration", duration.String(), "--out", filepath.Join(dir, fmt.Sprintf("p%d.txt", i)))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(duration / 2) // let contention run, then fail the leader under it
	leader := c.leader(5 * time.Second)
	c.stop(leader, syscall.SIGKILL)
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("contender: %v", err)
		}
	}

	var hs []holding
	perProc := make([]int, procs)
	for i := 0; i < procs; i++ {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("p%d.txt", i)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			h := holding{proc: i}
			if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %v", &h.token, &h.start, &h.end, &h.valid); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			hs = append(hs, h)
			perProc[i]++
		}
		f.Close()
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].start < hs[j].start })
	if len(hs) < 50 {
		t.Fatalf("only %d holdings in %v", len(hs), duration)
	}
	for i, h := range hs {
		if !h.valid {
			t.Errorf("holding with token %d was no longer valid at the end of its work (lost)", h.token)
		}
		if i == 0 {
			continue
		}
		prev := hs[i-1]
		if h.token <= prev.token {
			t.Errorf("token %d (process %d) after %d (process %d): tokens must rise", h.token, h.proc, prev.token, prev.proc)
		}
		if h.start < prev.end {
			t.Errorf("holdings overlap: token %d started %v before token %d ended", h.token, time.Duration(prev.end-h.start), prev.token)
		}
	}
	for i, n := range perProc {
		if n == 0 {
			t.Errorf("process %d never held the lock", i)
		}
	}
	t.Logf("%d holdings by 8 contenders in 4 processes over %v (per process %v), leader killed midway", len(hs), duration, perProc)
}
