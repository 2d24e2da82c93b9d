package harness

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// stallMinPayload tells a Raft message that carries log entries from a
// heartbeat by its size. hashicorp/raft's NetworkTransport sends a
// heartbeat as a msgpack AppendEntriesRequest without entries: about 135
// bytes with this suite's node IDs and addresses (145 for an empty append
// that only moves the commit index). One entry adds at least 75 bytes of
// framing to its command, so an append carrying a leasekeeper command is
// over 240 bytes.
const stallMinPayload = 200

// stallQueue is the netfilter queue number that a stall uses inside the
// stalled node's namespace.
const stallQueue = 77

// StallRaft delays by delay the Raft traffic that carries log entries from
// node id to every other node, until UnstallRaft: in netns mode the
// node's outgoing TCP segments to the Raft port that are big enough to
// carry entries go through a netfilter queue that holds each one for
// delay; in loopback mode the other nodes' proxies hold such reads from
// id. Heartbeats, the followers' answers and all gRPC traffic pass on
// time, so a stalled leader keeps its leadership (its followers hear it,
// and it hears them within its leader lease) and confirms it over gRPC,
// while each entry takes at least delay to commit. One stall at a time.
func (c *Cluster) StallRaft(id string, delay time.Duration) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	if delay <= 0 {
		return fmt.Errorf("harness: stall delay must be > 0, got %v", delay)
	}
	c.logf("harness: delay Raft entries from %s by %v", id, delay)
	return c.net.stall(n.Index, delay)
}

// UnstallRaft ends the stall, delivering at once what it still holds, and
// returns how many packets (netns) or reads (loopback) it delayed.
func (c *Cluster) UnstallRaft() (int64, error) {
	return c.net.unstall()
}

// Metrics reads node id's /metrics and returns every sample by its name
// and labels as the text format prints them, for example
// `leasekeeper_local_renewals_total{result="ok"}`.
func (c *Cluster) Metrics(ctx context.Context, id string) (map[string]float64, error) {
	n := c.Node(id)
	if n == nil {
		return nil, fmt.Errorf("harness: no node %q", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("harness: %s /metrics: %s", id, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}
