package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Names and addresses of the netns mode. Everything the suite creates
// starts with prefix, so a crashed run's leftovers can be found and removed;
// the subnet exists only on the bridge and inside the namespaces.
const (
	prefix     = "lkj-"
	bridgeName = prefix + "br0"
	subnet     = "10.77.0"
	bridgeIP   = subnet + ".1"
	grpcPort   = 7000
	raftPort   = 8000
	httpPort   = 9000
)

// netnsNet puts every node in its own network namespace, joined to a
// bridge in the root namespace by a veth pair. The bridge has an address
// too, so the workload in the root namespace reaches every node's client
// port; partitions are iptables DROP rules inside the node namespaces,
// which cut node-to-node traffic and leave client traffic alone.
type netnsNet struct {
	n    int
	logf func(string, ...any)
	// forwardRule is set when the suite had to allow forwarding on its
	// bridge in the root namespace (FORWARD policy DROP, e.g. on Docker
	// hosts); cleanStale removes that rule.
	forwardRule bool

	// The Raft stall in force, if any: the queue that delays the stalled
	// node's entries, and that node.
	stallMu   sync.Mutex
	stallQ    *nfqueue
	stallNode int

	// holeMu guards hole, the node whose traffic is black-holed (-1:
	// none).
	holeMu sync.Mutex
	hole   *int
}

func nsName(i int) string   { return fmt.Sprintf("%sn%d", prefix, i+1) }
func vethRoot(i int) string { return fmt.Sprintf("%sv%d", prefix, i+1) }
func vethNode(i int) string { return fmt.Sprintf("%sp%d", prefix, i+1) }
func nodeIP(i int) string   { return fmt.Sprintf("%s.%d", subnet, 11+i) }

// netnsUsable reports whether this process can build the netns network:
// root, ip and iptables present, and a namespace can be made.
func netnsUsable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found", tool)
		}
	}
	probe := prefix + "probe"
	_ = run("ip", "netns", "del", probe)
	if err := run("ip", "netns", "add", probe); err != nil {
		return err
	}
	return run("ip", "netns", "del", probe)
}

func (m *netnsNet) mode() Mode { return ModeNetns }

func (m *netnsNet) setup() error {
	cleanStale(m.logf)
	steps := [][]string{
		{"ip", "link", "add", bridgeName, "type", "bridge"},
		{"ip", "addr", "add", bridgeIP + "/24", "dev", bridgeName},
		{"ip", "link", "set", bridgeName, "up"},
	}
	for i := 0; i < m.n; i++ {
		ns := nsName(i)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "link", "add", vethRoot(i), "type", "veth", "peer", "name", vethNode(i)},
			[]string{"ip", "link", "set", vethNode(i), "netns", ns},
			[]string{"ip", "link", "set", vethRoot(i), "master", bridgeName, "up"},
			[]string{"ip", "-n", ns, "link", "set", vethNode(i), "name", "eth0"},
			[]string{"ip", "-n", ns, "addr", "add", nodeIP(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	// Bridged frames pass the root namespace's FORWARD chain when
	// br_netfilter is loaded; with a DROP policy the nodes could not talk.
	if out, err := output("iptables", "-w", "-S", "FORWARD"); err == nil && strings.Contains(out, "-P FORWARD DROP") {
		if err := run("iptables", "-w", "-I", "FORWARD", "-i", bridgeName, "-o", bridgeName, "-j", "ACCEPT"); err != nil {
			return err
		}
		m.forwardRule = true
	}
	return nil
}

func (m *netnsNet) addrs(i int) nodeAddrs {
	ip := nodeIP(i)
	return nodeAddrs{
		grpc:       fmt.Sprintf("%s:%d", ip, grpcPort),
		raft:       fmt.Sprintf("%s:%d", ip, raftPort),
		peer:       fmt.Sprintf("%s:%d", ip, raftPort),
		grpcListen: fmt.Sprintf("%s:%d", ip, grpcPort),
		http:       fmt.Sprintf("%s:%d", ip, httpPort),
	}
}

// command runs the node through `ip netns exec`, which enters the
// namespace and execs the binary in place: the process's PID is the
// node's, so signals reach it directly.
func (m *netnsNet) command(i int, bin string, args []string) (string, []string) {
	return "ip", append([]string{"netns", "exec", nsName(i), bin}, args...)
}

func (m *netnsNet) partition(cut [][2]int) error {
	if err := m.heal(); err != nil {
		return err
	}
	for _, p := range cut {
		a, b := p[0], p[1]
		// Dropping inbound on both sides cuts both directions, including
		// replies on connections that were open before.
		if err := run("ip", "netns", "exec", nsName(a), "iptables", "-w", "-A", "INPUT", "-s", nodeIP(b), "-j", "DROP"); err != nil {
			return err
		}
		if err := run("ip", "netns", "exec", nsName(b), "iptables", "-w", "-A", "INPUT", "-s", nodeIP(a), "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

func (m *netnsNet) heal() error {
	var first error
	for i := 0; i < m.n; i++ {
		if err := run("ip", "netns", "exec", nsName(i), "iptables", "-w", "-F", "INPUT"); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stallRule is the iptables rule (without its -A or -D) in node i's
// namespace that queues i's outgoing segments to the Raft port that may
// carry log entries: IP length at least the 40 bytes of bare IP and TCP
// headers plus stallMinPayload. --queue-bypass lets packets pass should no
// program listen on the queue.
func stallRule(i int) []string {
	return []string{"OUTPUT", "-o", "eth0", "-p", "tcp", "--dport", strconv.Itoa(raftPort),
		"-m", "length", "--length", fmt.Sprintf("%d:65535", 40+stallMinPayload),
		"-j", "NFQUEUE", "--queue-num", strconv.Itoa(stallQueue), "--queue-bypass"}
}

func iptablesIn(i int, op string, rule []string) error {
	return run("ip", append([]string{"netns", "exec", nsName(i), "iptables", "-w", op}, rule...)...)
}

// nsPath is where `ip netns add` mounted namespace ns.
func nsPath(ns string) string {
	for _, dir := range []string{"/run/netns", "/var/run/netns"} {
		if p := dir + "/" + ns; fileExists(p) {
			return p
		}
	}
	return "/run/netns/" + ns
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (m *netnsNet) stall(i int, delay time.Duration) error {
	m.stallMu.Lock()
	defer m.stallMu.Unlock()
	if m.stallQ != nil {
		return fmt.Errorf("harness: Raft traffic from %s is already stalled", nsName(m.stallNode))
	}
	q, err := openNfqueue(nsPath(nsName(i)), stallQueue, delay)
	if err != nil {
		return fmt.Errorf("harness: stall: %w", err)
	}
	if err := iptablesIn(i, "-A", stallRule(i)); err != nil {
		q.close()
		return err
	}
	m.stallQ, m.stallNode = q, i
	return nil
}

func (m *netnsNet) unstall() (int64, error) {
	m.stallMu.Lock()
	defer m.stallMu.Unlock()
	if m.stallQ == nil {
		return 0, nil
	}
	// The rule goes first, so that nothing is queued after the queue
	// has let everything go.
	err := iptablesIn(m.stallNode, "-D", stallRule(m.stallNode))
	n, qerr := m.stallQ.close()
	m.stallQ = nil
	return n, errors.Join(err, qerr)
}

// blackholeRules are the rules (without -I or -D) in a node's namespace
// that drop everything it receives and sends on its link to the bridge:
// node-to-node and client traffic alike, with no RST or ICMP answer. The
// namespace's loopback is left alone. They are inserted at the head of
// their chains, before any partition or stall rule.
func blackholeRules() [][]string {
	return [][]string{
		{"INPUT", "-i", "eth0", "-j", "DROP"},
		{"OUTPUT", "-o", "eth0", "-j", "DROP"},
	}
}

func (m *netnsNet) blackhole(i int) error {
	m.holeMu.Lock()
	defer m.holeMu.Unlock()
	if m.hole != nil {
		return fmt.Errorf("harness: %s is already black-holed", nsName(*m.hole))
	}
	m.hole = &i
	for _, r := range blackholeRules() {
		if err := iptablesIn(i, "-I", r); err != nil {
			return err // unblackhole removes what was added
		}
	}
	return nil
}

func (m *netnsNet) unblackhole() error {
	m.holeMu.Lock()
	defer m.holeMu.Unlock()
	if m.hole == nil {
		return nil
	}
	i := *m.hole
	var errs []error
	for _, r := range blackholeRules() {
		// Delete every copy; a rule that was never added is not an error.
		for iptablesIn(i, "-C", r) == nil {
			if err := iptablesIn(i, "-D", r); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if len(errs) == 0 {
		m.hole = nil
	}
	return errors.Join(errs...)
}

func (m *netnsNet) teardown() error {
	_ = m.unblackhole()
	_, _ = m.unstall()
	m.forwardRule = false
	cleanStale(m.logf)
	return nil
}

// cleanStale kills every process left in a namespace named with the
// suite's prefix and removes those namespaces, the suite's links and its
// FORWARD rule. It is called under the run lock, so no other run of the
// suite owns them.
func cleanStale(logf func(string, ...any)) {
	for i := 0; i < 10; i++ {
		if run("iptables", "-w", "-D", "FORWARD", "-i", bridgeName, "-o", bridgeName, "-j", "ACCEPT") != nil {
			break
		}
	}
	if out, err := output("ip", "netns", "list"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
				continue
			}
			ns := f[0]
			if pids, err := output("ip", "netns", "pids", ns); err == nil {
				for _, p := range strings.Fields(pids) {
					var pid int
					if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 {
						_ = syscall.Kill(pid, syscall.SIGCONT)
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			if err := run("ip", "netns", "del", ns); err != nil && logf != nil {
				logf("cleanup: %v", err)
			}
		}
	}
	if out, err := output("ip", "-o", "link", "show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			name := strings.TrimSuffix(f[1], ":")
			if i := strings.Index(name, "@"); i >= 0 {
				name = name[:i]
			}
			if strings.HasPrefix(name, prefix) {
				_ = run("ip", "link", "del", name)
			}
		}
	}
}

func run(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

func output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
