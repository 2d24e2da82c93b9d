package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// acquireJSON is the answer to acquire: the lease's fields, then how the
// acquire went.
type acquireJSON struct {
	client.LeaseJSON
	Acquired         bool     `json:"acquired"`
	Renewed          bool     `json:"renewed"`
	RemainingSeconds *float64 `json:"remainingSeconds,omitempty"`
}

func (a *app) acquireCmd() *cobra.Command {
	var (
		holder          string
		duration, grace time.Duration
		labels          map[string]string
		output          string
	)
	cmd := &cobra.Command{
		Use:   "acquire NAME --holder H [--duration 10s] [--grace 2s] [-l k=v ...]",
		Short: "Take a lease, or renew it if the holder holds it already",
		Long: `Take a lease, or renew it if the holder holds it already.

Exits 0 when the holder holds the lease, 3 when another holder does; prints the
current holding either way. Without --grace the server picks the grace period.`,
		Args: exactArgs(1, "one lease NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outLine, outJSON, outYAML); err != nil {
				return err
			}
			if holder == "" {
				return usageErrorf("--holder is required")
			}
			if duration <= 0 {
				return usageErrorf("--duration must be positive, got %v", duration)
			}
			var resp *pb.AcquireResponse
			err := a.callLease(args[0], func(ctx context.Context, c *client.Client) error {
				var err error
				resp, err = c.Acquire(ctx, a.namespace, args[0], holder, duration, grace, labels)
				return err
			})
			if err != nil {
				return err
			}
			if err := a.printAcquire(output, resp); err != nil {
				return err
			}
			if !resp.GetAcquired() {
				return &exitCodeError{code: exitHeld}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&holder, "holder", "", "identity of the holder (required)")
	f.DurationVar(&duration, "duration", 10*time.Second, "how long the holding lasts without a renewal")
	f.DurationVar(&grace, "grace", 0, "extra time before the holding expires (default: the server's)")
	f.StringToStringVarP(&labels, "labels", "l", nil, "labels k=v to set when a new holding begins")
	f.StringVarP(&output, "output", "o", outLine, "output format: line|json|yaml")
	return cmd
}

func (a *app) printAcquire(output string, resp *pb.AcquireResponse) error {
	if output != outLine {
		j := acquireJSON{LeaseJSON: client.NewLeaseJSON(resp.GetLease()), Acquired: resp.GetAcquired(), Renewed: resp.GetRenewed()}
		if r := resp.GetRemaining(); r != nil {
			s := r.AsDuration().Seconds()
			j.RemainingSeconds = &s
		}
		return writeObject(a.stdout, output, j)
	}
	verb := "held"
	switch {
	case resp.GetRenewed():
		verb = "renewed"
	case resp.GetAcquired():
		verb = "acquired"
	}
	_, err := fmt.Fprintln(a.stdout, holdingLine(verb, resp.GetLease(), resp.GetRemaining()))
	return err
}

// holdingCmd builds renew and release, which name a holding by holder and
// token.
func (a *app) holdingCmd(use, short, verb string, op func(c *client.Client, ctx context.Context, ns, name, holder string, token uint64) (*pb.Lease, error)) *cobra.Command {
	var (
		holder string
		token  uint64
		output string
	)
	cmd := &cobra.Command{
		Use:   use + " NAME --holder H --token T",
		Short: short,
		Args:  exactArgs(1, "one lease NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outLine, outJSON, outYAML); err != nil {
				return err
			}
			if holder == "" || !cmd.Flags().Changed("token") {
				return usageErrorf("--holder and --token are required")
			}
			var l *pb.Lease
			err := a.callLease(args[0], func(ctx context.Context, c *client.Client) error {
				var err error
				l, err = op(c, ctx, a.namespace, args[0], holder, token)
				return err
			})
			if err != nil {
				return err
			}
			if output != outLine {
				return writeObject(a.stdout, output, client.NewLeaseJSON(l))
			}
			line := fmt.Sprintf("%s %s/%s holder=%s token=%d", verb, l.GetNamespace(), l.GetName(), holder, token)
			if verb == "renewed" {
				line = holdingLine(verb, l, nil)
			}
			_, err = fmt.Fprintln(a.stdout, line)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&holder, "holder", "", "identity of the holder (required)")
	f.Uint64Var(&token, "token", 0, "fencing token of the holding (required)")
	f.StringVarP(&output, "output", "o", outLine, "output format: line|json|yaml")
	return cmd
}

func (a *app) renewCmd() *cobra.Command {
	return a.holdingCmd("renew", "Renew a holding", "renewed", renewRecorded)
}

// renewRecorded renews through the cluster's log, so the renewTime that
// renew prints is this renewal's (a renewal the leader confirms without
// the log leaves the stored lease as it was).
func renewRecorded(c *client.Client, ctx context.Context, namespace, name, holder string, token uint64) (*pb.Lease, error) {
	resp, err := c.Leases().Renew(ctx, &pb.RenewRequest{
		Namespace: namespace, Name: name, HolderIdentity: holder, FencingToken: token, Record: true,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetLease(), nil
}

func (a *app) releaseCmd() *cobra.Command {
	return a.holdingCmd("release", "Release a holding", "released", (*client.Client).Release)
}

func (a *app) deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete lease NAME",
		Short: "Delete a lease",
		Args:  exactArgs(2, "lease NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkResource(args[0]); err != nil {
				return err
			}
			err := a.callLease(args[1], func(ctx context.Context, c *client.Client) error {
				_, err := c.Delete(ctx, a.namespace, args[1])
				return err
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "lease %q deleted\n", a.namespace+"/"+args[1])
			return err
		},
	}
}

func checkResource(r string) error {
	if r != "lease" && r != "leases" {
		return usageErrorf("unknown resource %q: only lease (or leases) is known", r)
	}
	return nil
}
