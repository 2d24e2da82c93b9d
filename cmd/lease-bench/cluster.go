package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// node is one lease-node process of the cluster under test.
type node struct {
	id       string // Raft ID, as Cluster.Status names it; "" until known
	grpcAddr string
	pid      int // 0 when unknown: no CPU or RSS figures then

	// Set only when the bench started the node itself.
	args    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
}

// cluster is the set of nodes under test: started by the bench (managed),
// or an external cluster known by its endpoints.
type cluster struct {
	nodes   []*node
	managed bool
	bin     string // lease-node, managed only
	root    string // data dirs and logs, managed only
	keep    bool   // keep root on stop
	killCmd string // external only: how to kill a node; {pid}, {id}, {addr}
	once    sync.Once
}

// startCluster starts n lease-node processes on free loopback ports, each
// with its own data dir under a new temp dir in parent, with fsync on (the
// node's default) and extra flags from extra.
func startCluster(bin string, n int, parent string, extra []string, keep bool) (c *cluster, err error) {
	c = &cluster{managed: true, bin: bin, keep: keep}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if c.root, err = os.MkdirTemp(parent, "lease-bench-"); err != nil {
		return c, err
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return c, err
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, ports[n+i]))
	}
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		nd := &node{
			id:       id,
			grpcAddr: ports[i],
			logPath:  filepath.Join(c.root, id+".log"),
			args: append([]string{
				"--id", id, "--data-dir", filepath.Join(c.root, id),
				"--grpc-addr", ports[i], "--raft-addr", ports[n+i],
				"--bootstrap", "--peers", strings.Join(peers, ","),
			}, extra...),
		}
		c.nodes = append(c.nodes, nd)
		if err = c.start(nd); err != nil {
			return c, err
		}
	}
	return c, nil
}

// externalCluster describes a cluster that someone else runs. PIDs come
// from pids (in endpoint order) or are looked up from the listening
// sockets; a node whose PID is not found gets no CPU or RSS figures.
func externalCluster(endpoints []string, pids []int, killCmd string) *cluster {
	c := &cluster{killCmd: killCmd}
	for i, ep := range endpoints {
		nd := &node{grpcAddr: ep}
		if i < len(pids) {
			nd.pid = pids[i]
		} else if pid, err := listenerPID(ep); err == nil {
			nd.pid = pid
		} else {
			note("no PID for %s (%v): no CPU or RSS figures for it; pass --pids", ep, err)
		}
		c.nodes = append(c.nodes, nd)
	}
	return c
}

// start runs a managed node with its saved arguments, logging to its file.
func (c *cluster) start(nd *node) error {
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(c.bin, nd.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", nd.id, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	nd.cmd, nd.done, nd.pid = cmd, done, cmd.Process.Pid
	return nil
}

// endpoints returns every node's gRPC address.
func (c *cluster) endpoints() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.grpcAddr)
	}
	return out
}

// alive reports whether node i is believed to run.
func (c *cluster) alive(i int) bool {
	nd := c.nodes[i]
	if nd.done != nil {
		select {
		case <-nd.done:
			return false
		default:
			return true
		}
	}
	return nd.pid == 0 || processAlive(nd.pid)
}

// kill SIGKILLs node i and waits until it is gone.
func (c *cluster) kill(i int) error {
	nd := c.nodes[i]
	switch {
	case c.managed:
		_ = nd.cmd.Process.Kill()
		<-nd.done
		return nil
	case c.killCmd != "":
		cmd := strings.NewReplacer("{pid}", strconv.Itoa(nd.pid), "{id}", nd.id, "{addr}", nd.grpcAddr).Replace(c.killCmd)
		if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
			return fmt.Errorf("kill command %q: %v: %s", cmd, err, out)
		}
	case nd.pid == 0:
		return fmt.Errorf("no PID known for %s: pass --pids or --kill-cmd", nd.grpcAddr)
	default:
		if err := syscall.Kill(nd.pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: %w", nd.pid, err)
		}
	}
	if nd.pid == 0 {
		return nil // the kill command's business
	}
	for deadline := time.Now().Add(5 * time.Second); processAlive(nd.pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still alive 5s after the kill", nd.pid)
		}
	}
	return nil
}

// restart starts a killed managed node again on its data dir.
func (c *cluster) restart(i int) error {
	if !c.managed {
		return errors.New("restarting a node needs a cluster that the bench started (--node-bin)")
	}
	if c.alive(i) {
		return fmt.Errorf("%s is still running", c.nodes[i].id)
	}
	return c.start(c.nodes[i])
}

// stop ends managed nodes (SIGTERM, SIGKILL after 5s) and removes the temp
// dir unless asked to keep it. External nodes are left alone. Idempotent.
func (c *cluster) stop() {
	c.once.Do(func() {
		if !c.managed {
			return
		}
		for _, nd := range c.nodes {
			if nd.cmd != nil {
				_ = nd.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		deadline := time.After(5 * time.Second)
		for _, nd := range c.nodes {
			if nd.cmd == nil {
				continue
			}
			select {
			case <-nd.done:
			case <-deadline:
				_ = nd.cmd.Process.Kill()
				<-nd.done
			}
		}
		if c.root == "" {
			return
		}
		if c.keep {
			note("data and node logs kept in %s", c.root)
		} else {
			_ = os.RemoveAll(c.root)
		}
	})
}

// cpu returns each node's CPU seconds so far; -1 where unknown or gone.
func (c *cluster) cpu() []float64 {
	out := make([]float64, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = procCPU(nd.pid)
	}
	return out
}

// rssMB returns each node's resident set in MiB; -1 where unknown or gone.
func (c *cluster) rssMB() []float64 {
	out := make([]float64, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = procRSSMB(nd.pid)
	}
	return out
}

// loadavg returns the 1, 5 and 15 minute load averages, for notes: the
// machine may be shared.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// freePorts returns n distinct free loopback addresses.
func freePorts(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // hold each until all are picked
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := statFields(b)
	return len(f) > 0 && f[0] != "Z" // a zombie is dead, only not reaped
}

// statFields returns the fields of /proc/PID/stat after the command name;
// f[0] is field 3 (state).
func statFields(b []byte) []string {
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// procCPU returns a process's user+system CPU seconds (utime and stime,
// fields 14 and 15 of /proc/PID/stat, in USER_HZ = 100 ticks), or -1.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	f := statFields(b)
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (u + s) / 100
}

// procRSSMB returns VmRSS from /proc/PID/status in MiB, or -1.
func procRSSMB(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return -1
			}
			return math.Round(kb/1024*10) / 10
		}
	}
	return -1
}

// cpuSince returns per-process CPU seconds between two readings (-1 where
// either failed) and their sum over the processes that had both.
func cpuSince(before, after []float64) (each []float64, total float64) {
	for i := range before {
		d := -1.0
		if before[i] >= 0 && after[i] >= 0 {
			d = round2(after[i] - before[i])
			total += d
		}
		each = append(each, d)
	}
	return each, round2(total)
}

// listenerPID finds the process listening on addr's TCP port: the socket
// inode from /proc/net/tcp{,6}, then the process holding that inode among
// /proc/*/fd. Only processes of the same user are visible.
func listenerPID(addr string) (int, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return 0, err
	}
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st ... inode (field 9)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); ok && err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, _ := os.ReadDir(p + "/fd")
		for _, fd := range fds {
			if link, err := os.Readlink(p + "/fd/" + fd.Name()); err == nil && inodes[link] {
				return strconv.Atoi(filepath.Base(p))
			}
		}
	}
	return 0, fmt.Errorf("port %d: listening socket found, but no visible process holds it", port)
}
