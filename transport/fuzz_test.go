package transport

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// The name rules, written out independently of the validation functions.
var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// FuzzValidation feeds arbitrary names, holders, labels and selectors to
// the request checks: no panic, and whatever passes keeps the documented
// limits.
func FuzzValidation(f *testing.F) {
	f.Add("default", "db-lock", "alice", "app", "web", "app=web,tier!=db,!old")
	f.Add("", "", "", "", "", "")
	f.Add("Team_A", strings.Repeat("a", 64), "bob\x00", "example.com/app", "v1.2", "a==b")
	f.Add("a-", "-a", "\xff", "/x", "-", "=,!")
	f.Add("kube-system", "80807133.tutorial.kubebuilder.io", "pod-1", "app", "x", "")
	f.Add("a.b", "a..b", "x", "k", "v", "")
	f.Fuzz(func(t *testing.T, ns, name, holder, labelKey, labelValue, sel string) {
		if got, err := validateKey(ns, name); err == nil {
			if len(got) > maxNamespaceLen || len(name) > maxNameLen || !dnsLabel.MatchString(got) || !dnsSubdomain.MatchString(name) {
				t.Fatalf("accepted namespace %q name %q", got, name)
			}
		}
		if err := validateHolder(holder); err == nil {
			if holder == "" || len(holder) > maxHolderLen || !utf8.ValidString(holder) {
				t.Fatalf("accepted holder %q", holder)
			}
		}
		if err := validateLabels(map[string]string{labelKey: labelValue}); err == nil {
			if len(labelValue) > maxLabelValueLen || labelKey == "" {
				t.Fatalf("accepted label %q=%q", labelKey, labelValue)
			}
		}
		if s, err := labels.ParseSelector(sel); err == nil {
			_ = s.Matches(map[string]string{labelKey: labelValue})
		}
	})
}
