package client

import (
	"fmt"
	"regexp"
	"time"
	"unicode"

	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// The server's limits on names, holders and labels (transport/validate.go),
// checked here too so that a constructor refuses what every acquire would.
const (
	maxNamespaceLen = 63  // a DNS-1123 label
	maxNameLen      = 253 // a DNS-1123 subdomain
	maxHolderLen    = 253
)

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// invalidf returns an error that matches ErrInvalid. It carries no gRPC
// status: the refusal is the client's, not a server's answer.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func validateNamespace(ns string) error {
	switch {
	case ns == "":
		return fmt.Errorf("namespace is empty")
	case len(ns) > maxNamespaceLen || !dnsLabel.MatchString(ns):
		return fmt.Errorf("namespace %q is not a DNS-1123 label (at most %d characters: lowercase letters, digits and '-', starting and ending with a letter or digit)", trunc(ns), maxNamespaceLen)
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("lease name is empty")
	case len(name) > maxNameLen || !dnsSubdomain.MatchString(name):
		return fmt.Errorf("lease name %q is not a DNS-1123 subdomain (at most %d characters: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)", trunc(name), maxNameLen)
	}
	return nil
}

func validateHolder(h string) error {
	switch {
	case h == "":
		return fmt.Errorf("holder identity is empty")
	case len(h) > maxHolderLen:
		return fmt.Errorf("holder identity is longer than %d bytes", maxHolderLen)
	}
	for _, r := range h {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("holder identity %q has a non-printable character", trunc(h))
		}
	}
	return nil
}

func validateLabels(lbl map[string]string) error { return labels.Validate(lbl) }

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// checkHolding checks, at construction, what a holding of name with o
// needs of the client: valid options, a valid name, and a renewal
// interval before the holding's local deadline. ctor names the
// constructor in the error.
func (c *Client) checkHolding(ctor, name string, o options) error {
	if c == nil {
		return invalidf("%s: nil *Client", ctor)
	}
	if err := validateName(name); err != nil {
		return invalidf("%s: %v", ctor, err)
	}
	if err := o.check(); err != nil {
		return invalidf("%s: %v", ctor, err)
	}
	if err := c.checkWindow(o); err != nil {
		return invalidf("%s: %v", ctor, err)
	}
	return nil
}

// renewInterval is how often a holding with o is renewed.
func (c *Client) renewInterval(o options) time.Duration {
	if o.renewEvery != 0 {
		return o.renewEvery
	}
	fraction := o.renewFraction
	if fraction == 0 {
		fraction = c.cfg.RenewFraction
	}
	return time.Duration(float64(o.duration) * fraction)
}

// checkWindow refuses timings whose renewal would come after the local
// deadline (Config.MaxDrift and Config.Margin shorten the duration).
func (c *Client) checkWindow(o options) error {
	renewEvery := c.renewInterval(o)
	if w := c.keeper.window(o.duration, o.maxValid); renewEvery >= w {
		return fmt.Errorf("lease duration %v leaves a local deadline of %v (Config.MaxDrift %v, Config.Margin %v), not after the renewal interval %v",
			o.duration, w, c.cfg.MaxDrift, c.cfg.Margin, renewEvery)
	}
	return nil
}
