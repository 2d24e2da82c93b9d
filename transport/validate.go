package transport

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/leasekeeper/leasekeeper/internal/labels"

	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits on names and labels, as in Kubernetes: a namespace is a DNS-1123
// label (at most 63 characters), a lease name a DNS-1123 subdomain (at
// most 253, dots allowed), as the Lease type's own validation has it.
const (
	maxNamespaceLen  = validation.DNS1123LabelMaxLength
	maxNameLen       = validation.DNS1123SubdomainMaxLength
	maxHolderLen     = 253
	maxLabels        = labels.MaxLabels
	maxLabelValueLen = 63
)

// DefaultNamespace is used when a request names none.
const DefaultNamespace = "default"

// validateNamespace and validateName check with Kubernetes' own functions,
// and say what is wrong in its words ("name: Invalid value: ...: a
// lowercase RFC 1123 subdomain must consist of ..."), so that both APIs
// give the same reasons.
func validateNamespace(v string) error { return checkName("namespace", v, validation.IsDNS1123Label) }

func validateName(v string) error { return checkName("name", v, validation.IsDNS1123Subdomain) }

func checkName(name, v string, check func(string) []string) error {
	path := field.NewPath(name)
	if v == "" {
		return field.Required(path, "")
	}
	if msgs := check(v); len(msgs) > 0 {
		return field.Invalid(path, trunc(v), strings.Join(msgs, "; "))
	}
	return nil
}

func namespaceOr(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

func validateKey(namespace, name string) (string, error) {
	ns := namespaceOr(namespace)
	if err := validateNamespace(ns); err != nil {
		return "", err
	}
	return ns, validateName(name)
}

func validateHolder(h string) error {
	if h == "" {
		return fmt.Errorf("holder_identity is required")
	}
	if len(h) > maxHolderLen {
		return fmt.Errorf("holder_identity is longer than %d bytes", maxHolderLen)
	}
	for _, r := range h {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("holder_identity %q has a non-printable character", trunc(h))
		}
	}
	return nil
}

func validateToken(t uint64) error {
	if t == 0 {
		return fmt.Errorf("fencing_token is required")
	}
	return nil
}

// writeDuration names a whole-object write's lease_duration to
// validateDuration, which bounds it by MaxWriteLeaseDuration.
const writeDuration = "lease_duration of a write"

func (s *Server) validateDuration(field string, d *durationpb.Duration, required bool) (time.Duration, error) {
	if d == nil {
		if required {
			return 0, fmt.Errorf("%s is required", field)
		}
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %v", field, err)
	}
	v := d.AsDuration()
	lim := s.cfg
	switch field {
	case "lease_duration", writeDuration:
		maxDur := lim.MaxLeaseDuration
		if field == writeDuration {
			maxDur = lim.MaxWriteLeaseDuration
		}
		if v <= 0 {
			return 0, fmt.Errorf("lease_duration must be positive, got %v", v)
		}
		if v < lim.MinLeaseDuration || v > maxDur {
			return 0, fmt.Errorf("lease_duration %v is outside [%v, %v]", v, lim.MinLeaseDuration, maxDur)
		}
	case "lock_delay":
		if v < 0 {
			return 0, fmt.Errorf("lock_delay must not be negative, got %v", v)
		}
		if v > lim.MaxLockDelay {
			return 0, fmt.Errorf("lock_delay %v is above the maximum %v", v, lim.MaxLockDelay)
		}
	default:
		if v < 0 {
			return 0, fmt.Errorf("%s must not be negative, got %v", field, v)
		}
		if v > lim.MaxGracePeriod {
			return 0, fmt.Errorf("%s %v is above the maximum %v", field, v, lim.MaxGracePeriod)
		}
	}
	return v, nil
}

func validateLabels(lbl map[string]string) error { return labels.Validate(lbl) }

// trunc keeps error messages short when the input is huge.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
