package auth

import (
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// PolicyFile is the YAML form of the policy:
//
//	roles:
//	- name: team-a-reader
//	  rules:
//	  - namespaces: [team-a]        # or "*"; "prefix*" matches by prefix
//	    verbs: [get, list, watch]   # get list watch create update delete admin, or "*"
//	    names: [leader-*]           # optional: only these lease names
//	bindings:
//	- role: team-a-reader
//	  subjects:
//	  - {kind: user, name: alice}
//	  - {kind: group, name: team-a}
//	actAs:                          # holder identities besides the caller's name
//	- subject: {kind: user, name: deployer}
//	  holders: [deploy-*]
//
// A rule with names does not grant list or watch over a whole namespace. The
// admin verb is cluster-wide and only a rule whose namespaces include "*"
// grants it. The group "system:authenticated" holds every authenticated
// identity.
type PolicyFile struct {
	Roles    []Role    `json:"roles"`
	Bindings []Binding `json:"bindings"`
	ActAs    []ActAs   `json:"actAs,omitempty"`
}

// Role is a named set of rules.
type Role struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

// Rule grants verbs on leases in namespaces, optionally only some names.
type Rule struct {
	Namespaces []string `json:"namespaces"`
	Verbs      []string `json:"verbs"`
	Names      []string `json:"names,omitempty"`
}

// Binding grants a role to subjects.
type Binding struct {
	Role     string    `json:"role"`
	Subjects []Subject `json:"subjects"`
}

// Subject is a user or a group.
type Subject struct {
	Kind string `json:"kind"` // "user" or "group"
	Name string `json:"name"`
}

// Subject kinds.
const (
	KindUser  = "user"
	KindGroup = "group"
)

// ActAs lets a subject use holder identities other than its own name.
type ActAs struct {
	Subject Subject  `json:"subject"`
	Holders []string `json:"holders"`
}

// Policy is a parsed policy file, ready to answer Authorize. It is read-only
// and safe for concurrent use.
type Policy struct {
	byUser, byGroup     map[string][]*Rule
	actUser, actGroup   map[string][]string
	roles, bindingCount int
}

// LoadPolicy reads and parses a policy file.
func LoadPolicy(path string) (*Policy, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses and checks a YAML policy; unknown fields, unknown verbs,
// bindings to missing roles and duplicate roles are errors.
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: policy is larger than %d bytes", ErrInvalidConfig, maxFileSize)
	}
	var f PolicyFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%w: policy: %v", ErrInvalidConfig, err)
	}
	return NewPolicy(f)
}

// NewPolicy checks f and compiles it.
func NewPolicy(f PolicyFile) (*Policy, error) {
	p := &Policy{
		byUser: map[string][]*Rule{}, byGroup: map[string][]*Rule{},
		actUser: map[string][]string{}, actGroup: map[string][]string{},
		roles: len(f.Roles), bindingCount: len(f.Bindings),
	}
	roles := make(map[string][]*Rule, len(f.Roles))
	for i, r := range f.Roles {
		if err := checkName("roles", i, "name", r.Name); err != nil {
			return nil, err
		}
		if _, dup := roles[r.Name]; dup {
			return nil, fmt.Errorf("%w: roles[%d]: role %q is defined twice", ErrInvalidConfig, i, r.Name)
		}
		if len(r.Rules) == 0 {
			return nil, fmt.Errorf("%w: roles[%d] (%q) has no rules", ErrInvalidConfig, i, r.Name)
		}
		rules := make([]*Rule, 0, len(r.Rules))
		for j, rule := range r.Rules {
			if err := checkRule(rule); err != nil {
				return nil, fmt.Errorf("%w: roles[%d] (%q) rules[%d]: %v", ErrInvalidConfig, i, r.Name, j, err)
			}
			rule := Rule{
				Namespaces: slices.Clone(rule.Namespaces),
				Verbs:      slices.Clone(rule.Verbs),
				Names:      slices.Clone(rule.Names),
			}
			rules = append(rules, &rule)
		}
		roles[r.Name] = rules
	}
	for i, b := range f.Bindings {
		rules, ok := roles[b.Role]
		if !ok {
			return nil, fmt.Errorf("%w: bindings[%d]: role %q is not defined", ErrInvalidConfig, i, b.Role)
		}
		if len(b.Subjects) == 0 {
			return nil, fmt.Errorf("%w: bindings[%d] (role %q) has no subjects", ErrInvalidConfig, i, b.Role)
		}
		for _, s := range b.Subjects {
			m, err := subjectMap(s, p.byUser, p.byGroup)
			if err != nil {
				return nil, fmt.Errorf("%w: bindings[%d] (role %q): %v", ErrInvalidConfig, i, b.Role, err)
			}
			m[s.Name] = append(m[s.Name], rules...)
		}
	}
	for i, a := range f.ActAs {
		m, err := subjectMap(a.Subject, p.actUser, p.actGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: actAs[%d]: %v", ErrInvalidConfig, i, err)
		}
		if len(a.Holders) == 0 {
			return nil, fmt.Errorf("%w: actAs[%d] (%s %q) has no holders", ErrInvalidConfig, i, a.Subject.Kind, a.Subject.Name)
		}
		for _, h := range a.Holders {
			if err := checkPattern("holders", h); err != nil {
				return nil, fmt.Errorf("%w: actAs[%d]: %v", ErrInvalidConfig, i, err)
			}
		}
		m[a.Subject.Name] = append(m[a.Subject.Name], a.Holders...)
	}
	return p, nil
}

func subjectMap[T any](s Subject, users, groups map[string][]T) (map[string][]T, error) {
	if !validName(s.Name) {
		return nil, fmt.Errorf("subject name %q must be 1 to %d printable ASCII characters", s.Name, maxNameLen)
	}
	switch s.Kind {
	case KindUser:
		return users, nil
	case KindGroup:
		return groups, nil
	}
	return nil, fmt.Errorf("subject %q has kind %q, want %q or %q", s.Name, s.Kind, KindUser, KindGroup)
}

func checkRule(r Rule) error {
	if len(r.Namespaces) == 0 {
		return fmt.Errorf("namespaces is empty (use \"*\" for all)")
	}
	if len(r.Verbs) == 0 {
		return fmt.Errorf("verbs is empty")
	}
	for _, v := range r.Verbs {
		if !slices.Contains(knownVerbs, v) {
			return fmt.Errorf("unknown verb %q (want one of %v)", v, knownVerbs)
		}
	}
	for _, ns := range r.Namespaces {
		if err := checkPattern("namespaces", ns); err != nil {
			return err
		}
	}
	for _, n := range r.Names {
		if err := checkPattern("names", n); err != nil {
			return err
		}
	}
	return nil
}

// checkPattern accepts a name, "*", or a prefix followed by one "*".
func checkPattern(field, v string) error {
	if !validName(v) || strings.Contains(strings.TrimSuffix(v, "*"), "*") {
		return fmt.Errorf("%s entry %q must be a name, \"*\" or \"prefix*\"", field, v)
	}
	return nil
}

// Authorize returns nil when the policy lets id do verb on the lease
// namespace/name (name empty for List and Watch, namespace AllNamespaces
// across all, both ignored for VerbAdmin). Otherwise it returns an *Error
// wrapping ErrPermissionDenied that names the caller, the verb and the
// namespace.
func (p *Policy) Authorize(id Identity, verb, namespace, name string) error {
	if p != nil && slices.Contains(knownVerbs, verb) && verb != VerbAll {
		if p.allows(p.byUser[id.Name], verb, namespace, name) {
			return nil
		}
		for _, g := range groupsOf(id) {
			if p.allows(p.byGroup[g], verb, namespace, name) {
				return nil
			}
		}
	}
	return denial(id, verb, namespace, name)
}

func denial(id Identity, verb, namespace, name string) *Error {
	switch {
	case verb == VerbAdmin:
		return denied(ReasonForbidden, "%q may not administer the cluster (verb %q)", id.Name, verb)
	case namespace == AllNamespaces:
		return denied(ReasonForbidden, "%q may not %s leases in all namespaces", id.Name, verb)
	case name != "":
		return denied(ReasonForbidden, "%q may not %s lease %q in namespace %q", id.Name, verb, name, namespace)
	}
	return denied(ReasonForbidden, "%q may not %s leases in namespace %q", id.Name, verb, namespace)
}

func (p *Policy) allows(rules []*Rule, verb, namespace, name string) bool {
	for _, r := range rules {
		if !slices.Contains(r.Verbs, verb) && !slices.Contains(r.Verbs, VerbAll) {
			continue
		}
		if verb == VerbAdmin {
			if slices.Contains(r.Namespaces, "*") {
				return true
			}
			continue
		}
		if !slices.ContainsFunc(r.Namespaces, func(p string) bool { return matchPattern(p, namespace) }) {
			continue
		}
		if len(r.Names) == 0 {
			return true
		}
		if name != "" && slices.ContainsFunc(r.Names, func(p string) bool { return matchPattern(p, name) }) {
			return true
		}
	}
	return false
}

// MayActAs reports whether id may use holder as a holder identity: its own
// name always, others through actAs.
func (p *Policy) MayActAs(id Identity, holder string) bool {
	if holder == id.Name {
		return true
	}
	if p == nil {
		return false
	}
	match := func(h string) bool { return matchPattern(h, holder) }
	if slices.ContainsFunc(p.actUser[id.Name], match) {
		return true
	}
	for _, g := range groupsOf(id) {
		if slices.ContainsFunc(p.actGroup[g], match) {
			return true
		}
	}
	return false
}

// groupsOf returns id's groups, with GroupAuthenticated when it applies.
func groupsOf(id Identity) []string {
	if id.InGroup(GroupAuthenticated) && !slices.Contains(id.Groups, GroupAuthenticated) {
		return append(slices.Clip(id.Groups), GroupAuthenticated)
	}
	return id.Groups
}

// String summarizes the policy for logs.
func (p *Policy) String() string {
	return fmt.Sprintf("%d roles, %d bindings", p.roles, p.bindingCount)
}
