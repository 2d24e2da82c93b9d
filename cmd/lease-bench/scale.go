package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// defaultSnapshotThreshold is lease-node's --snapshot-threshold default.
const defaultSnapshotThreshold = 16384

// scale (opt-in, needs --node-bin): --scale-leases live leases (duration
// --scale-ttl, so none expires during the run), then per node: RSS, the
// last automatic snapshot's duration and size (there is no API to trigger
// one: the time comes from raft's "starting snapshot"/"snapshot complete"
// log lines), the time a killed follower takes to restart and catch up, and
// the failover time with that much state. The leases are not deleted: the
// cluster is thrown away afterwards.
func (b *bench) scale(ctx context.Context) error {
	if !b.c.managed {
		return fmt.Errorf("scale needs a cluster that the bench started (--node-bin)")
	}
	n := b.cfg.scaleLeases
	rss0 := b.c.rssMB()
	gp, err := b.grantMany(ctx, "scale", n, b.cfg.scaleClients, fixedTTL(b.cfg.scaleTTL), b.cfg.scaleGrant, nil, nil)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		if gp.granted() == 0 {
			return err
		}
		note("scale: %v; going on with %d leases", err, gp.granted())
	}
	grantDur := gp.at[len(gp.at)-1]
	grantEnd := time.Now()
	lead, err := b.findLeader(ctx)
	if err != nil {
		return err
	}
	st, err := b.nodeCl[lead].Status(ctx)
	if err != nil {
		return err
	}
	commit, total := st.GetCommitIndex(), st.GetLeases()
	rss := b.c.rssMB()
	note("scale: %d leases in the table, commit index %d; RSS MiB %v (before: %v)", total, commit, rss, rss0)

	// Wait for a snapshot near the end of the log on every node.
	threshold := uint64(defaultSnapshotThreshold)
	for i, a := range b.cfg.nodeArgs {
		if v, ok := strings.CutPrefix(a, "--snapshot-threshold="); ok {
			threshold, _ = strconv.ParseUint(v, 10, 64)
		} else if a == "--snapshot-threshold" && i+1 < len(b.cfg.nodeArgs) {
			threshold, _ = strconv.ParseUint(b.cfg.nodeArgs[i+1], 10, 64)
		}
	}
	want := uint64(0)
	if commit > threshold {
		want = commit - threshold
	}
	snaps := make([]snapshotLog, len(b.c.nodes))
	for until := time.Now().Add(b.cfg.scaleSnapAt); ; sleep(ctx, time.Second) {
		ok := true
		for i, nd := range b.c.nodes {
			snaps[i] = lastSnapshot(nd.logPath, gp.start)
			ok = ok && snaps[i].index >= want && snaps[i].took > 0
		}
		if ok || time.Now().After(until) || ctx.Err() != nil {
			break
		}
	}
	var snapMS, snapMB []any
	var snapIdx []uint64
	for i, s := range snaps {
		snapIdx = append(snapIdx, s.index)
		if s.took > 0 {
			snapMS = append(snapMS, ms(s.took))
		} else {
			snapMS = append(snapMS, nil)
		}
		snapMB = append(snapMB, snapshotMB(filepath.Join(b.c.root, b.c.nodes[i].id)))
	}

	// Restart a follower and time its catch-up.
	f := (lead + 1) % len(b.c.nodes)
	if err := b.c.kill(f); err != nil {
		return err
	}
	t0 := time.Now()
	if err := b.c.restart(f); err != nil {
		return err
	}
	var up, caught time.Duration
	for limit := t0.Add(b.cfg.phaseWait); caught == 0 && time.Now().Before(limit) && ctx.Err() == nil; sleep(ctx, 50*time.Millisecond) {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		fs, err := b.nodeCl[f].Status(sctx)
		cancel()
		if err != nil {
			continue
		}
		if up == 0 {
			up = time.Since(t0)
		}
		if fs.GetAppliedIndex() >= commit && fs.GetLeases() >= total {
			caught = time.Since(t0)
		}
	}
	if caught == 0 {
		note("scale: %s did not catch up within %v", b.nodeName(f), b.cfg.phaseWait)
	}
	rssRestarted := procRSSMB(b.c.nodes[f].pid)

	// Failover with all that state.
	if err := b.waitHealthy(ctx, 60*time.Second); err != nil {
		return err
	}
	fo, err := b.killLeader(ctx, b.cfg.leaseTTL)
	if err != nil {
		return err
	}
	emit("system", "leasekeeper", "workload", "scale", "leases", gp.granted(), "table_leases", total,
		"grant_s", round2(grantDur.Seconds()), "grant_per_s", round1(float64(gp.granted())/grantDur.Seconds()),
		"grant_p50_ms", pct(gp.lats, .5), "grant_p99_ms", pct(gp.lats, .99), "grant_errors", gp.nerr,
		"rss_mb", rss, "rss_mb_before", rss0, "commit_index", commit,
		"snapshot_ms", snapMS, "snapshot_index", snapIdx, "snapshot_mb", snapMB, "snapshot_trigger", "automatic (no API)",
		"snapshot_wait_s", round2(time.Since(grantEnd).Seconds()),
		"restart_node", b.nodeName(f), "restart_up_ms", ms(up), "restart_catchup_ms", nullIfZero(caught),
		"rss_mb_restarted", rssRestarted,
		"failover_ms", ms(fo.recovery), "lease_survived", fo.survived, "killed", b.nodeName(fo.killed))
	return b.rejoin(ctx, fo.killed)
}

func nullIfZero(d time.Duration) any {
	if d == 0 {
		return nil
	}
	return ms(d)
}

// snapshotLog is one snapshot as a node's log tells it.
type snapshotLog struct {
	index uint64
	took  time.Duration // 0 when it has not completed
}

var (
	logTime  = regexp.MustCompile(`^(\S+)`)
	logIndex = regexp.MustCompile(`index=(\d+)`)
)

// lastSnapshot finds the last completed snapshot in a node's log that
// started after since, from hashicorp/raft's lines "starting snapshot up
// to" and "snapshot complete up to" (hclog timestamps).
func lastSnapshot(logPath string, since time.Time) snapshotLog {
	f, err := os.Open(logPath)
	if err != nil {
		return snapshotLog{}
	}
	defer f.Close()
	var last snapshotLog
	started := map[uint64]time.Time{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		starting := strings.Contains(line, "starting snapshot up to")
		if !starting && !strings.Contains(line, "snapshot complete up to") {
			continue
		}
		m, t := logIndex.FindStringSubmatch(line), logTime.FindString(line)
		ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", t)
		if m == nil || err != nil || ts.Before(since.Truncate(time.Millisecond)) {
			continue
		}
		idx, _ := strconv.ParseUint(m[1], 10, 64)
		if starting {
			started[idx] = ts
		} else if s, ok := started[idx]; ok {
			last = snapshotLog{index: idx, took: max(ts.Sub(s), time.Millisecond)}
		}
	}
	return last
}

// snapshotMB is the size of the newest snapshot in a node's data dir, in
// MiB, or -1.
func snapshotMB(dataDir string) float64 {
	files, _ := filepath.Glob(filepath.Join(dataDir, "snapshots", "*", "state.bin"))
	if len(files) == 0 {
		return -1
	}
	slices.Sort(files) // names start with term-index-time: the last is the newest
	fi, err := os.Stat(files[len(files)-1])
	if err != nil {
		return -1
	}
	return round1(float64(fi.Size()) / (1 << 20))
}
