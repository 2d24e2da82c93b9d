package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasekeeper/leasekeeper/client"
)

// exitNotFound is the shell's code for a command that could not be started.
const exitNotFound = 127

// defaultKillGrace is --kill-grace's default, and so --grace's: long enough
// for a command to finish a write and exit on SIGTERM, short enough that a
// crashed holder blocks the next one for --ttl + 5s only.
const defaultKillGrace = 5 * time.Second

func (a *app) lockCmd() *cobra.Command {
	var (
		ttl, grace, killGrace, wait time.Duration
		lockDelay                   time.Duration
		identity                    string
		noWait                      bool
		slots                       int
	)
	cmd := &cobra.Command{
		Use:   "lock NAME [--ttl 10s] -- CMD [ARGS...]",
		Short: "Run a command while holding a fenced lock",
		Long: `Take the lock NAME (waiting while another holder has it), run CMD while
holding it, release it when CMD exits, and exit with CMD's status.

CMD finds the holding in its environment: LEASE_FENCING_TOKEN (send it with
every write to the protected resource), LEASE_HOLDER, LEASE_NAME and
LEASE_NAMESPACE.

If the lock is lost (a renewal refused, or no renewal succeeded before the
holding's local deadline), CMD gets SIGTERM at once and SIGKILL after
--kill-grace; leasectl then exits with CMD's status (128+signal when killed).

--grace and --kill-grace are tied: the server grants the lock to the next
holder no sooner than --ttl + --grace after the last renewal, while leasectl
gives the lock up at its local deadline, a little before --ttl has passed,
and CMD is dead --kill-grace after that at the latest. So with --grace at
least --kill-grace (the default: --grace follows --kill-grace unless set) CMD
is dead before anyone else can hold the lock. A smaller --grace gives a
faster takeover after a crash, but CMD may then still run for up to the
difference while the next holder runs: leasectl warns of it. The lock
cannot be held for CMD against a delete or an overwrite of the lease; only
the fencing token protects against what CMD does after one.

SIGINT or SIGTERM to leasectl is passed on to CMD the same way, and the lock
is released once CMD has exited. Signals reach CMD's own process only: a
shell script should exec its long-running program.

With --slots N (N > 1), NAME is a semaphore of N slots, the leases NAME-0 …
NAME-(N-1): at most N such commands run at once. Waiters queue on the server
and get freed slots first come, first served. LEASE_NAME is the slot's lease,
and LEASE_FENCING_TOKEN its token.

Exit codes besides CMD's: 1 error, 2 usage, 3 lock held (--no-wait),
127 CMD could not be started.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return usageErrorf("%s takes NAME -- CMD [ARGS...]", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 || grace < 0 || killGrace < 0 || wait < 0 || lockDelay < 0 || slots < 1 {
				return usageErrorf("--ttl and --slots must be positive; --grace, --kill-grace, --wait and --lock-delay must not be negative")
			}
			if !cmd.Flags().Changed("grace") {
				grace = killGrace
			} else if grace < killGrace {
				fmt.Fprintf(a.stderr, "leasectl: warning: --grace %v is below --kill-grace %v: if the lock is lost, CMD may run for up to %v while the next holder holds it\n",
					grace, killGrace, killGrace-grace)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if identity == "" {
				identity = client.NewIdentity()
			}
			opts := []client.Option{client.WithNamespace(a.namespace), client.WithTTL(ttl),
				client.WithGrace(grace), client.WithIdentity(identity), client.WithLockDelay(lockDelay)}
			ctx := a.ctx
			if wait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			h, err := take(ctx, c, args[0], slots, noWait, opts)
			var held *client.HeldError
			if errors.As(err, &held) && held.Lease.GetLockDelayed() {
				fmt.Fprintf(a.stderr, "leasectl: %s/%s is in its lock delay: its last holder expired (token %d)\n", a.namespace, args[0],
					held.Lease.GetFencingToken())
				return &exitCodeError{code: exitHeld}
			}
			if errors.As(err, &held) && slots > 1 {
				fmt.Fprintf(a.stderr, "leasectl: all %d slots of %s/%s are held (%s by %s, token %d)\n", slots, a.namespace, args[0],
					held.Lease.GetName(), held.Lease.GetHolderIdentity(), held.Lease.GetFencingToken())
				return &exitCodeError{code: exitHeld}
			}
			if errors.As(err, &held) {
				fmt.Fprintf(a.stderr, "leasectl: %s/%s is held by %s (token %d)\n", a.namespace, args[0],
					held.Lease.GetHolderIdentity(), held.Lease.GetFencingToken())
				return &exitCodeError{code: exitHeld}
			}
			if err != nil {
				return fmt.Errorf("lock %s/%s: %w", a.namespace, args[0], err)
			}
			fmt.Fprintf(a.stderr, "leasectl: locked %s/%s holder=%s token=%d\n", h.Namespace(), h.Name(), h.Holder(), h.Token())
			// CMD stops when the holding ends or leasectl is interrupted.
			runCtx, stop := context.WithCancelCause(a.ctx)
			defer stop(nil)
			unhook := context.AfterFunc(h.Context(), func() { stop(fmt.Errorf("lock lost: %w", h.Err())) })
			code, _ := a.runCommand(runCtx, h, args[1:], killGrace)
			unhook()

			rctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), a.timeout)
			defer cancel()
			if err := h.Release(rctx); err != nil && !errors.Is(err, client.ErrLost) {
				fmt.Fprintf(a.stderr, "leasectl: release: %v\n", err)
			}
			return &exitCodeError{code: code}
		},
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", 10*time.Second, "lease duration: how long the lock outlives a silent holder")
	f.DurationVar(&grace, "grace", 0, "extra time before the server expires a silent holding (default: --kill-grace, so that a lost lock's CMD is dead before the next holder is granted it)")
	f.DurationVar(&killGrace, "kill-grace", defaultKillGrace, "time between SIGTERM and SIGKILL when the lock is lost; keep it at most --grace")
	f.DurationVar(&wait, "wait", 0, "give up waiting for the lock after this long (0: wait forever)")
	f.BoolVar(&noWait, "no-wait", false, "exit 3 at once when the lock is held (or in its lock delay)")
	f.DurationVar(&lockDelay, "lock-delay", 0, "if this holder dies without releasing, keep the lock from everyone for this long after it expires, so its last writes drain (server maximum: lease-node --max-lock-delay)")
	f.StringVar(&identity, "identity", "", "holder identity (default: host-pid-random)")
	f.IntVar(&slots, "slots", 1, "let up to this many commands hold NAME at once (a semaphore of NAME-0 … NAME-<slots-1>)")
	return cmd
}

// take takes the lock name, or with slots > 1 a slot of the semaphore
// name; with noWait it does not queue.
func take(ctx context.Context, c *client.Client, name string, slots int, noWait bool, opts []client.Option) (*client.Holding, error) {
	if slots > 1 {
		s, err := client.NewSemaphore(c, name, slots, opts...)
		if err != nil {
			return nil, err
		}
		if noWait {
			return s.TryAcquire(ctx)
		}
		return s.Acquire(ctx)
	}
	m, err := client.NewMutex(c, name, opts...)
	if err != nil {
		return nil, err
	}
	if noWait {
		return m.TryLock(ctx)
	}
	return m.Lock(ctx)
}

// runCommand runs argv with the holding's environment until it exits
// (true, with its status) or ctx ends (false: it was stopped, and the
// status is how it ended).
func (a *app) runCommand(ctx context.Context, h *client.Holding, argv []string, killGrace time.Duration) (int, bool) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = a.stdout
	cmd.Stderr = a.stderr
	cmd.Env = append(os.Environ(), holdingEnv(h)...)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(a.stderr, "leasectl: %v\n", err)
		return exitNotFound, true
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		return exitStatus(err), true
	case <-ctx.Done():
	}
	fmt.Fprintf(a.stderr, "leasectl: stopping %s: %v\n", argv[0], context.Cause(ctx))
	return exitStatus(terminate(cmd.Process, waited, killGrace)), false
}

// holdingEnv is what a command run under a holding learns of it.
func holdingEnv(h *client.Holding) []string {
	return []string{
		"LEASE_FENCING_TOKEN=" + strconv.FormatUint(h.Token(), 10),
		"LEASE_HOLDER=" + h.Holder(),
		"LEASE_NAME=" + h.Name(),
		"LEASE_NAMESPACE=" + h.Namespace(),
	}
}

// terminate sends SIGTERM, then SIGKILL after grace, and returns the
// process's end.
func terminate(p *os.Process, waited <-chan error, grace time.Duration) error {
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-waited:
		return err
	case <-t.C:
		_ = p.Kill()
		return <-waited
	}
}

// exitStatus is the shell's view of a command's end: its exit code, or
// 128+signal when a signal ended it.
func exitStatus(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return exitError
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}
