package integration

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startClusterScript runs scripts/cluster.sh (make run) with a stand-in
// for lease-node that sleeps, or exits at once when its --id is exitID,
// so no ports are taken. It returns once the script has started the three
// and printed its banner.
func startClusterScript(t *testing.T, exitID string) (*exec.Cmd, *lockedBuffer, chan error) {
	t.Helper()
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-node")
	script := "#!/bin/sh\ncase \" $* \" in *\" --id " + exitID + " \"*) exit 3;; esac\nexec sleep 60\n"
	if exitID == "" {
		script = "#!/bin/sh\nexec sleep 60\n"
	}
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../scripts/cluster.sh")
	cmd.Env = append(os.Environ(), "BIN="+fake, "DATA_DIR="+filepath.Join(dir, "data"))
	// Its own process group, as a terminal's foreground job is: Ctrl-C
	// signals the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	banner := make(chan bool, 1)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ctrl-C stops all three") && !seen {
				seen = true
				banner <- true
			}
		}
		if !seen {
			banner <- false
		}
		done <- cmd.Wait()
	}()
	select {
	case ok := <-banner:
		if !ok {
			t.Fatalf("cluster.sh ended before its banner; stderr: %s", stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no banner from cluster.sh within 30s; stderr: %s", stderr)
	}
	return cmd, stderr, done
}

func waitExit(t *testing.T, done chan error, stderr *lockedBuffer) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("cluster.sh did not end within 30s; stderr: %s", stderr)
		return nil
	}
}

// TestClusterScriptCtrlC: Ctrl-C on make run says the cluster is
// stopping, not that a node exited, stops the nodes and exits 0.
func TestClusterScriptCtrlC(t *testing.T) {
	cmd, stderr, done := startClusterScript(t, "")
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, done, stderr); err != nil {
		t.Errorf("exit: %v, want 0; stderr: %s", err, stderr)
	}
	got := stderr.String()
	if !strings.Contains(got, "Ctrl-C: stopping the cluster") || strings.Contains(got, "a node exited") {
		t.Errorf("stderr %q, want the Ctrl-C stop and no node exit", got)
	}
}

// TestClusterScriptNodeExit: a node that ends by itself is reported as
// such, and the script stops the others and fails.
func TestClusterScriptNodeExit(t *testing.T) {
	_, stderr, done := startClusterScript(t, "n2")
	err := waitExit(t, done, stderr)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1; stderr: %s", err, stderr)
	}
	if got := stderr.String(); !strings.Contains(got, "a node exited (status 3)") || !strings.Contains(got, "a node exited: stopping the cluster") {
		t.Errorf("stderr %q, want the node's exit and the stop", got)
	}
}
