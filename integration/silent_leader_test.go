package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A leader that stops answering without closing its connections, paused
// or cut off by a firewall that drops its packets, must not hold the
// renewals that its followers forward to it (issue #16). A holder renews
// a 3 s lease every 0.5 s through the two followers only, with leasectl,
// one renewal at a time, while the leader is silent for longer than the
// lease; the followers must move each renewal on to the leader the others
// elect. (A renewal held until leasectl's 10 s timeout loses the lease.)

const (
	renewEvery    = 500 * time.Millisecond
	leaseDuration = 3 * time.Second
)

// ctlAt runs leasectl against endpoints; safe to call from any goroutine.
func ctlAt(endpoints []string, args ...string) (string, int, error) {
	cmd := exec.Command(ctlBinary, append([]string{"--endpoints", strings.Join(endpoints, ",")}, args...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0, nil
	case errors.As(err, &exit):
		return string(out), exit.ExitCode(), nil
	}
	return string(out), -1, err
}

// renewal is one `leasectl renew`: when it started (from the first), how
// long it took, and how it ended.
type renewal struct {
	at, took time.Duration
	code     int
	out      string
}

var tokenRE = regexp.MustCompile(`token=(\d+)`)

// holdThroughFollowers acquires the lease db for alice and returns the
// followers' endpoints and the token, once a renewal through each
// follower has succeeded (each knows where the leader is).
func holdThroughFollowers(t *testing.T, c *cluster, leader *proc) ([]string, string) {
	t.Helper()
	var followers []string
	for _, p := range c.procs {
		if p != leader {
			followers = append(followers, p.grpc)
		}
	}
	// A grace period of (almost) nothing: the holding lapses 3 s after
	// its last renewal, well within the leader's silence.
	out, code := c.ctl("acquire", "db", "--holder", "alice", "--duration", leaseDuration.String(), "--grace", "10ms")
	m := tokenRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("acquire: exit %d, %s", code, out)
	}
	for _, f := range followers {
		if out, code, err := ctlAt([]string{f}, "renew", "db", "--holder", "alice", "--token", m[1]); code != 0 || err != nil {
			t.Fatalf("renew through %s before the fault: exit %d, %v, %s", f, code, err, out)
		}
	}
	return followers, m[1]
}

// renewWhile renews as a holder does, one renewal at a time, each at the
// next renewEvery slot after the one before has returned, through
// endpoints, until total has passed. Meanwhile it calls fault(true) at
// faultAt and fault(false) at healAt. It returns every renewal.
func renewWhile(endpoints []string, token string, total, faultAt, healAt time.Duration, fault func(on bool)) []renewal {
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(faultAt) // the fault's schedule
		fault(true)
		time.Sleep(healAt - faultAt)
		fault(false)
	})
	defer wg.Wait()
	var out []renewal
	for at := time.Duration(0); at < total; at = time.Since(start).Truncate(renewEvery) + renewEvery {
		time.Sleep(time.Until(start.Add(at))) // the holder's renewal period
		begin := time.Now()
		o, code, err := ctlAt(endpoints, "renew", "db", "--holder", "alice", "--token", token)
		if err != nil {
			o, code = err.Error(), -1
		}
		out = append(out, renewal{at: at, took: time.Since(begin), code: code, out: strings.TrimSpace(o)})
	}
	return out
}

// checkRenewals asserts that at least half the renewals sent during the
// fault succeeded and that alice's holding is the one she began: same
// token, one transition.
func checkRenewals(t *testing.T, c *cluster, rs []renewal, token string, faultAt, healAt time.Duration) {
	t.Helper()
	var during, ok int
	var longest time.Duration
	for _, r := range rs {
		line := fmt.Sprintf("renewal at %5.1fs took %5.2fs: exit %d", r.at.Seconds(), r.took.Seconds(), r.code)
		if r.code != 0 {
			line += ": " + r.out
		}
		t.Log(line)
		if r.at >= faultAt && r.at < healAt {
			during++
			if r.code == 0 {
				ok++
			}
			longest = max(longest, r.took)
		}
	}
	t.Logf("%d of %d renewals sent during the fault succeeded; the longest took %v", ok, during, longest.Round(time.Millisecond))
	if during == 0 || 2*ok < during {
		t.Errorf("%d of %d renewals sent during the fault succeeded, want at least half", ok, during)
	}
	out, code := c.ctl("get", "lease", "db", "-o", "json")
	var lease map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &lease) != nil {
		t.Fatalf("get lease: exit %d, %s", code, out)
	}
	want, _ := strconv.ParseFloat(token, 64)
	if lease["holderIdentity"] != "alice" || lease["fencingToken"] != want || lease["leaseTransitions"] != float64(1) {
		t.Errorf("after the fault: holder %v, token %v, transitions %v; want alice's holding, token %s, 1 transition",
			lease["holderIdentity"], lease["fencingToken"], lease["leaseTransitions"], token)
	}
}

// TestRenewThroughFollowersWhileTheLeaderIsPaused: the leader is
// SIGSTOPped for 8 s; its connections stay open and its kernel still
// accepts, but nothing answers. A read through a follower's Kubernetes
// Lease API, which calls the follower's own gRPC API, answers too.
func TestRenewThroughFollowersWhileTheLeaderIsPaused(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader(15 * time.Second)
	followers, token := holdThroughFollowers(t, c, leader)
	var follower *proc
	for _, p := range c.procs {
		if p != leader {
			follower = p
		}
	}
	k8s := k8sAPI(t, follower) + "/apis/coordination.k8s.io/v1/namespaces/default/leases/db"
	pid := leader.cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	var (
		wg      sync.WaitGroup
		k8sCode int
		k8sErr  error
		k8sTook time.Duration
	)
	const faultAt, healAt = time.Second, 9 * time.Second
	rs := renewWhile(followers, token, healAt+2*time.Second, faultAt, healAt, func(on bool) {
		sig := syscall.SIGCONT
		if on {
			sig = syscall.SIGSTOP
		}
		if err := syscall.Kill(pid, sig); err != nil {
			t.Errorf("signal %v to the leader: %v", sig, err)
		}
		if on {
			wg.Go(func() {
				time.Sleep(200 * time.Millisecond) // into the pause
				start := time.Now()
				hc := http.Client{Timeout: 10 * time.Second}
				resp, err := hc.Get(k8s)
				k8sTook, k8sErr = time.Since(start), err
				if err == nil {
					k8sCode = resp.StatusCode
					resp.Body.Close()
				}
			})
		}
	})
	wg.Wait()
	checkRenewals(t, c, rs, token, faultAt, healAt)
	t.Logf("GET of the lease through %s's Kubernetes API during the pause: %d %v, took %v", follower.id, k8sCode, k8sErr, k8sTook.Round(time.Millisecond))
	if k8sErr != nil || k8sCode != http.StatusOK || k8sTook > 5*time.Second {
		t.Errorf("GET through the Kubernetes API during the pause: status %d, error %v, took %v; want 200 within 5 s", k8sCode, k8sErr, k8sTook)
	}
}

// TestRenewThroughFollowersWhileTheLeaderIsCutOff: for 10 s a firewall
// drops every packet to or from the leader's ports, and every packet the
// leader sends to the others' (its own outgoing connections are known by
// its user ID: each node runs as a user of its own). The rules match the
// test's ports only and are removed when it ends; a run killed before its
// cleanup leaves them behind, tagged leasekeeper-it-<pid> (iptables -S).
func TestRenewThroughFollowersWhileTheLeaderIsCutOff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for iptables and for running the nodes as users of their own")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables")
	}
	if out, err := exec.Command("iptables", "-w", "-S", "OUTPUT").CombinedOutput(); err != nil {
		t.Skipf("iptables unusable: %v: %s", err, out)
	}
	// Users that no one else has, unique to this run.
	base := uint32(2_000_000_000 + 4*(os.Getpid()%100_000))
	// The nodes, running as other users, must reach the binary and their
	// data directories.
	if err := os.Chmod(filepath.Dir(binary), 0o755); err != nil {
		t.Fatal(err)
	}
	i := uint32(0)
	c := startClusterWith(t, 3, func(p *proc) {
		i++
		p.uid = base + i
		for _, d := range []string{filepath.Dir(filepath.Dir(p.dataDir)), filepath.Dir(p.dataDir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p.dataDir, int(p.uid), int(p.uid)); err != nil {
			t.Fatal(err)
		}
	})
	leader := c.leader(15 * time.Second)
	followers, token := holdThroughFollowers(t, c, leader)

	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	own := port(leader.grpc) + "," + port(leader.raft)
	var others []string
	for _, p := range c.procs {
		if p != leader {
			others = append(others, port(p.grpc), port(p.raft))
		}
	}
	tag := fmt.Sprintf("leasekeeper-it-%d", os.Getpid())
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", own},
		{"INPUT", "-i", "lo", "-p", "tcp", "-m", "multiport", "--sports", own},
		{"OUTPUT", "-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", strconv.Itoa(int(leader.uid)),
			"-m", "multiport", "--dports", strings.Join(others, ",")},
	}
	var mu sync.Mutex
	added := 0
	iptables := func(op string, rule []string) error {
		args := append([]string{"-w", op}, rule...)
		args = append(args, "-m", "comment", "--comment", tag, "-j", "DROP")
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	heal := func() {
		mu.Lock()
		defer mu.Unlock()
		for ; added > 0; added-- {
			if err := iptables("-D", rules[added-1]); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(heal)
	const faultAt, healAt = time.Second, 11 * time.Second
	rs := renewWhile(followers, token, healAt+2*time.Second, faultAt, healAt, func(on bool) {
		if !on {
			heal()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rules {
			if err := iptables("-I", r); err != nil {
				t.Error(err)
				return
			}
			added++
		}
	})
	checkRenewals(t, c, rs, token, faultAt, healAt)
}
