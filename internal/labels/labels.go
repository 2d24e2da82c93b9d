// Package labels checks Kubernetes-style label keys and values and parses
// equality-based label selectors ("a=b,c!=d,e,!f"). The server and the
// client's test server share it, so both read a selector the same way.
package labels

import (
	"fmt"
	"regexp"
	"strings"
)

// Limits, as in Kubernetes.
const (
	maxNameLen   = 63
	maxPrefixLen = 253
	maxValueLen  = 63
)

var (
	name         = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidateKey checks a label key: an optional DNS subdomain prefix and '/',
// then a name of at most 63 characters.
func ValidateKey(k string) error {
	prefix, n, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		n, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > maxPrefixLen || !dnsSubdomain.MatchString(prefix)) {
		return fmt.Errorf("label key %q has an invalid prefix", trunc(k))
	}
	if n == "" || len(n) > maxNameLen || !name.MatchString(n) {
		return fmt.Errorf("label key %q is invalid (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)", trunc(k))
	}
	return nil
}

// ValidateValue checks a label value; empty is allowed.
func ValidateValue(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxValueLen || !name.MatchString(v) {
		return fmt.Errorf("value %q is invalid (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)", trunc(v))
	}
	return nil
}

// MaxLabels is the most labels a lease may carry.
const MaxLabels = 64

// Validate checks a set of labels: at most MaxLabels, each key and value
// valid. The server checks what it is sent with it, and the client what
// it is given, with the same words.
func Validate(lbl map[string]string) error {
	if len(lbl) > MaxLabels {
		return fmt.Errorf("too many labels: %d, at most %d", len(lbl), MaxLabels)
	}
	for k, v := range lbl {
		if err := ValidateKey(k); err != nil {
			return err
		}
		if err := ValidateValue(v); err != nil {
			return fmt.Errorf("label %q: %v", trunc(k), err)
		}
	}
	return nil
}

// Selector is a parsed equality-based selector: every requirement must hold.
type Selector []Requirement

// Requirement is one term of a Selector.
type Requirement struct {
	Key, Value string
	Op         string // "=", "!=", "exists", "!exists"
}

// ParseSelector parses "a=b", "a==b", "a!=b", "a" (exists) and "!a" (does
// not exist), joined by ','. The empty selector matches everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var r Requirement
		switch {
		case strings.Contains(part, "!="):
			k, v, _ := strings.Cut(part, "!=")
			r = Requirement{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Op: "!="}
		case strings.Contains(part, "=="):
			k, v, _ := strings.Cut(part, "==")
			r = Requirement{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Op: "="}
		case strings.Contains(part, "="):
			k, v, _ := strings.Cut(part, "=")
			r = Requirement{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Op: "="}
		case strings.HasPrefix(part, "!"):
			r = Requirement{Key: strings.TrimSpace(part[1:]), Op: "!exists"}
		default:
			r = Requirement{Key: part, Op: "exists"}
		}
		if err := ValidateKey(r.Key); err != nil {
			return nil, fmt.Errorf("label selector: %v", err)
		}
		if err := ValidateValue(r.Value); err != nil {
			return nil, fmt.Errorf("label selector: %v", err)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		switch r.Op {
		case "=":
			if !ok || v != r.Value {
				return false
			}
		case "!=":
			if ok && v == r.Value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

// trunc keeps error messages short when the input is huge.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
