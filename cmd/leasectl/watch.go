package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// watchEventJSON is one line of watch -o json.
type watchEventJSON struct {
	Type     string           `json:"type"`
	Revision uint64           `json:"revision"`
	Lease    client.LeaseJSON `json:"lease"`
}

func (a *app) watchCmd() *cobra.Command {
	var (
		allNamespaces bool
		selector      string
		rev           uint64
		output        string
	)
	cmd := &cobra.Command{
		Use:   "watch [NAME] [-n NS | -A] [-l selector] [--rev N]",
		Short: "Print lease changes as they happen, until interrupted",
		Long: `Print lease changes as they happen, one line each, until interrupted.

With --rev N the watch first replays every change after revision N. When the
answering node goes away, or sends nothing (not even its progress messages)
for three seconds, the watch resumes on another one after the last revision
printed. --timeout does not apply.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("%s takes at most one lease NAME, got %d arguments", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outLine, outJSON); err != nil {
				return err
			}
			req := &pb.WatchRequest{
				Namespace:     a.namespace,
				AllNamespaces: allNamespaces,
				LabelSelector: selector,
				StartRevision: rev,
			}
			if len(args) == 1 {
				if allNamespaces {
					return usageErrorf("a lease NAME cannot go with --all-namespaces")
				}
				req.Name = args[0]
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.watch(c, req, output)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "watch every namespace")
	f.StringVarP(&selector, "selector", "l", "", "label selector, e.g. app=db,tier!=cache")
	f.Uint64Var(&rev, "rev", 0, "replay the changes after this revision first")
	f.StringVarP(&output, "output", "o", outLine, "output format: line|json (one object a line)")
	return cmd
}

// watch prints events until a.ctx is done, which ends it without error. A
// stream that breaks with ErrUnavailable is opened again after the last
// revision printed; a watch that started with no revision may miss the
// changes made while it was broken before its first event.
func (a *app) watch(c *client.Client, req *pb.WatchRequest, output string) error {
	const minWait, maxWait = 100 * time.Millisecond, 2 * time.Second
	wait := minWait
	for {
		err := a.watchOnce(c, req, output, func() { wait = minWait })
		switch {
		case a.ctx.Err() != nil || err == io.EOF:
			return nil
		case !errors.Is(err, client.ErrUnavailable):
			return err
		}
		fmt.Fprintf(a.stderr, "leasectl: watch broken (%v), resuming after revision %d\n", err, req.StartRevision)
		select {
		case <-a.ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// watchOnce prints the events of one stream and advances req.StartRevision
// past each; it calls progress after each event.
func (a *app) watchOnce(c *client.Client, req *pb.WatchRequest, output string, progress func()) error {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	stream, err := c.Watch(ctx, req)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(a.stdout)
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if output == outJSON {
			err = enc.Encode(watchEventJSON{Type: ev.GetType().String(), Revision: ev.GetRevision(), Lease: client.NewLeaseJSON(ev.GetLease())})
		} else {
			l := ev.GetLease()
			_, err = fmt.Fprintf(a.stdout, "%s %s/%s holder=%s token=%d rev=%d\n",
				ev.GetType(), l.GetNamespace(), l.GetName(), l.GetHolderIdentity(), l.GetFencingToken(), ev.GetRevision())
		}
		if err != nil {
			return err
		}
		req.StartRevision = ev.GetRevision()
		progress()
	}
}
