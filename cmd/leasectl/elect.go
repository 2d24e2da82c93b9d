package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasekeeper/leasekeeper/client"
)

func (a *app) electCmd() *cobra.Command {
	var (
		identity                         string
		ttl, renewDeadline, retry, grace time.Duration
		killGrace                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "elect NAME --identity ID [--ttl 15s] [-- CMD [ARGS...]]",
		Short: "Campaign for leadership, printing each change; run CMD while leading",
		Long: `Campaign for the leadership of the lease NAME as ID until interrupted, and
print every change of leader ("leader: ID", "leader: <none>") and of this
candidate's own state ("leading", "stopped leading").

With CMD, run it each time this candidate starts leading, with
LEASE_FENCING_TOKEN, LEASE_HOLDER, LEASE_NAME and LEASE_NAMESPACE set. When the
leadership is lost CMD gets SIGTERM (SIGKILL after --kill-grace) and the
campaign goes on. When CMD exits by itself, leasectl steps down (releasing the
lease) and exits with CMD's status. On SIGINT or SIGTERM leasectl stops CMD,
releases the lease and exits 0.

Timings follow client-go: --ttl > --renew-deadline > --retry. The leader stops
leading at the latest --renew-deadline after its last successful renewal was
sent, before any other candidate can be granted the lease.`,
		Args: func(cmd *cobra.Command, args []string) error {
			at := cmd.ArgsLenAtDash()
			if (at == -1 && len(args) != 1) || (at != -1 && (at != 1 || len(args) < 2)) {
				return usageErrorf("%s takes NAME [-- CMD [ARGS...]]", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if identity == "" {
				return usageErrorf("--identity is required")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.elect(c, args[0], args[1:], client.ElectorConfig{
				Namespace: a.namespace, Name: args[0], Identity: identity,
				LeaseDuration: ttl, RenewDeadline: renewDeadline, RetryPeriod: retry, GracePeriod: grace,
				ReleaseOnCancel: true,
			}, killGrace)
		},
	}
	f := cmd.Flags()
	f.StringVar(&identity, "identity", "", "this candidate's identity (required, unique among candidates)")
	f.DurationVar(&ttl, "ttl", 15*time.Second, "lease duration")
	f.DurationVar(&renewDeadline, "renew-deadline", 10*time.Second, "how long the leader keeps leading without a successful renewal")
	f.DurationVar(&retry, "retry", 2*time.Second, "time between a candidate's attempts, and between the leader's renewals")
	f.DurationVar(&grace, "grace", 0, "extra time before the server expires a silent leader")
	f.DurationVar(&killGrace, "kill-grace", 10*time.Second, "time between SIGTERM and SIGKILL when leadership is lost")
	return cmd
}

func (a *app) elect(c *client.Client, name string, argv []string, cfg client.ElectorConfig, killGrace time.Duration) error {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	var (
		mu      sync.Mutex // orders the lines printed by the callbacks
		cmdDone bool
		code    int
		le      *client.LeaderElector
	)
	printf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(a.stdout, format, args...)
	}
	cfg.Callbacks = client.LeaderCallbacks{
		OnNewLeader: func(id string) { printf("leader: %s\n", orNone(id)) },
		OnStartedLeading: func(lctx context.Context) {
			h := le.Holding()
			printf("leading %s/%s as %s token=%d\n", h.Namespace(), h.Name(), h.Holder(), h.Token())
			if len(argv) == 0 {
				return
			}
			status, exited := a.runCommand(lctx, h, argv, killGrace)
			if exited {
				mu.Lock()
				cmdDone, code = true, status
				mu.Unlock()
				cancel()
			}
		},
		OnStoppedLeading: func() { printf("stopped leading\n") },
	}
	var err error
	le, err = client.NewLeaderElector(c, cfg)
	if err != nil {
		return usageErrorf("%v", err)
	}
	for ctx.Err() == nil {
		err := le.Run(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, client.ErrLost):
			// Lost the leadership: campaign again.
		case err != nil:
			return err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if cmdDone {
		return &exitCodeError{code: code}
	}
	return nil
}
