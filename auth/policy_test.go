package auth

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

func TestPolicyAuthorize(t *testing.T) {
	var f PolicyFile
	f.Roles = []Role{
		{Name: "reader-a", Rules: []Rule{{Namespaces: []string{"team-a"}, Verbs: []string{VerbGet, VerbList}}}},
		{Name: "leader-only", Rules: []Rule{{Namespaces: []string{"team-*"}, Verbs: []string{VerbGet, VerbUpdate}, Names: []string{"leader-*", "exact"}}}},
		{Name: "everyone", Rules: []Rule{{Namespaces: []string{"public"}, Verbs: []string{VerbGet}}}},
		{Name: "root", Rules: []Rule{{Namespaces: []string{"*"}, Verbs: []string{VerbAll}}}},
		{Name: "ns-admin", Rules: []Rule{{Namespaces: []string{"team-a"}, Verbs: []string{VerbAll}}}},
	}
	f.Bindings = []Binding{
		{Role: "reader-a", Subjects: []Subject{{Kind: KindUser, Name: "alice"}}},
		{Role: "leader-only", Subjects: []Subject{{Kind: KindUser, Name: "elector"}}},
		{Role: "everyone", Subjects: []Subject{{Kind: KindGroup, Name: GroupAuthenticated}}},
		{Role: "root", Subjects: []Subject{{Kind: KindGroup, Name: "admins"}}},
		{Role: "ns-admin", Subjects: []Subject{{Kind: KindUser, Name: "nsadmin"}}},
	}
	f.ActAs = []ActAs{{Subject: Subject{Kind: KindGroup, Name: "workers"}, Holders: []string{"worker-*"}}}
	p, err := NewPolicy(f)
	if err != nil {
		t.Fatal(err)
	}

	alice := Identity{Name: "alice", Source: SourceCert}
	elector := Identity{Name: "elector", Source: SourceToken}
	root := Identity{Name: "r", Groups: []string{"admins"}, Source: SourceCert}
	anon := Anonymous
	tests := []struct {
		desc                  string
		id                    Identity
		verb, namespace, name string
		want                  bool
		msg                   string
	}{
		{"granted verb", alice, VerbGet, "team-a", "x", true, ""},
		{"list", alice, VerbList, "team-a", "", true, ""},
		{"verb not granted", alice, VerbCreate, "team-a", "x", false, `auth: "alice" may not create lease "x" in namespace "team-a"`},
		{"other namespace", alice, VerbGet, "team-b", "x", false, `auth: "alice" may not get lease "x" in namespace "team-b"`},
		{"all namespaces needs *", alice, VerbList, AllNamespaces, "", false, `auth: "alice" may not list leases in all namespaces`},
		{"list message", alice, VerbList, "team-b", "", false, `auth: "alice" may not list leases in namespace "team-b"`},
		{"unknown user", Identity{Name: "zed", Source: SourceCert}, VerbGet, "team-a", "x", false, ""},
		{"prefix namespace and name", elector, VerbUpdate, "team-q", "leader-1", true, ""},
		{"exact name", elector, VerbGet, "team-q", "exact", true, ""},
		{"name outside the list", elector, VerbUpdate, "team-q", "other", false, ""},
		{"names rule grants no list", elector, VerbGet, "team-q", "", false, ""},
		{"prefix namespace does not match all", elector, VerbGet, AllNamespaces, "leader-1", false, ""},
		{"authenticated group", alice, VerbGet, "public", "x", true, ""},
		{"anonymous is not authenticated", anon, VerbGet, "public", "x", false, ""},
		{"root everywhere", root, VerbDelete, "anything", "x", true, ""},
		{"root all namespaces", root, VerbWatch, AllNamespaces, "", true, ""},
		{"root admin", root, VerbAdmin, "", "", true, ""},
		{"verb * in one namespace does not grant admin", Identity{Name: "nsadmin", Source: SourceCert}, VerbAdmin, "", "", false, `auth: "nsadmin" may not administer the cluster (verb "admin")`},
		{"namespace admin otherwise", Identity{Name: "nsadmin", Source: SourceCert}, VerbDelete, "team-a", "x", true, ""},
		{"unknown verb", root, "frobnicate", "team-a", "x", false, ""},
		{"verb * is not a request verb", root, VerbAll, "team-a", "x", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := p.Authorize(tt.id, tt.verb, tt.namespace, tt.name)
			if (err == nil) != tt.want {
				t.Fatalf("Authorize: got %v, want allowed=%v", err, tt.want)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrPermissionDenied) {
				t.Errorf("error %v does not wrap ErrPermissionDenied", err)
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("status code: got %v, want PermissionDenied", status.Code(err))
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("message: got %q, want %q", err.Error(), tt.msg)
			}
		})
	}

	actTests := []struct {
		name   string
		id     Identity
		holder string
		want   bool
	}{
		{"own name", alice, "alice", true},
		{"someone else", alice, "bob", false},
		{"group prefix", Identity{Name: "w", Groups: []string{"workers"}}, "worker-3", true},
		{"group prefix mismatch", Identity{Name: "w", Groups: []string{"workers"}}, "manager", false},
	}
	for _, tt := range actTests {
		t.Run("actAs "+tt.name, func(t *testing.T) {
			if got := p.MayActAs(tt.id, tt.holder); got != tt.want {
				t.Fatalf("MayActAs(%v, %q): got %v, want %v", tt.id, tt.holder, got, tt.want)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"not yaml", "roles: [", "policy"},
		{"unknown field", "roles: []\nbindingz: []", "unknown field"},
		{"unknown verb", "roles: [{name: r, rules: [{namespaces: [a], verbs: [read]}]}]", `unknown verb "read"`},
		{"no namespaces", "roles: [{name: r, rules: [{verbs: [get]}]}]", "namespaces is empty"},
		{"no verbs", "roles: [{name: r, rules: [{namespaces: [a]}]}]", "verbs is empty"},
		{"no rules", "roles: [{name: r}]", "has no rules"},
		{"duplicate role", "roles: [{name: r, rules: [{namespaces: [a], verbs: [get]}]}, {name: r, rules: [{namespaces: [a], verbs: [get]}]}]", "defined twice"},
		{"missing role", "roles: []\nbindings: [{role: r, subjects: [{kind: user, name: a}]}]", `role "r" is not defined`},
		{"bad kind", "roles: [{name: r, rules: [{namespaces: [a], verbs: [get]}]}]\nbindings: [{role: r, subjects: [{kind: robot, name: a}]}]", `kind "robot"`},
		{"no subjects", "roles: [{name: r, rules: [{namespaces: [a], verbs: [get]}]}]\nbindings: [{role: r}]", "no subjects"},
		{"star inside a pattern", "roles: [{name: r, rules: [{namespaces: [\"a*b\"], verbs: [get]}]}]", "prefix*"},
		{"actAs without holders", "actAs: [{subject: {kind: user, name: a}}]", "no holders"},
		{"empty subject name", "actAs: [{subject: {kind: user, name: \"\"}, holders: [x]}]", "subject name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.yaml))
			if err == nil {
				t.Fatal("got no error")
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
		})
	}
	if _, err := ParsePolicy(nil); err != nil {
		t.Errorf("empty policy: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig()
	with := func(f func(*Config)) Config {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"default", base, ""},
		{"unknown mode", with(func(c *Config) { c.Mode = "ldap" }), `Mode "ldap"`},
		{"mtls", with(func(c *Config) { c.Mode, c.PolicyFile = ModeMTLS, "p" }), ""},
		{"mtls without policy", with(func(c *Config) { c.Mode = ModeMTLS }), "PolicyFile"},
		{"mtls with tokens", with(func(c *Config) { c.Mode, c.PolicyFile, c.TokenFile = ModeMTLS, "p", "t" }), "TokenFile is set"},
		{"token without token file", with(func(c *Config) { c.Mode, c.PolicyFile = ModeToken, "p" }), "needs TokenFile"},
		{"token", with(func(c *Config) { c.Mode, c.PolicyFile, c.TokenFile = ModeToken, "p", "t" }), ""},
		{"mtls+token", with(func(c *Config) { c.Mode, c.PolicyFile, c.TokenFile = ModeMTLSToken, "p", "t" }), ""},
		{"no node group", with(func(c *Config) { c.Mode, c.PolicyFile, c.NodeGroup = ModeMTLS, "p", "" }), "NodeGroup"},
		{"bad public method", with(func(c *Config) { c.Mode, c.PolicyFile, c.PublicMethods = ModeMTLS, "p", []string{"Health"} }), "PublicMethods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
		})
	}
}

// Every method of the services has a rule: one without is refused when
// auth is on, so a new RPC forgotten here would fail only in secured
// clusters.
func TestEveryMethodHasARule(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{pb.Leases_ServiceDesc, pb.Cluster_ServiceDesc,
		reflectionv1.ServerReflection_ServiceDesc, reflectionv1alpha.ServerReflection_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			if _, ok := Methods()["/"+sd.ServiceName+"/"+n]; !ok {
				t.Errorf("%s.%s has no authorization rule", sd.ServiceName, n)
			}
		}
	}
}

// TestSemaphoreReleaseScope: leaving a semaphore's queue is scoped to its
// first slot, which a policy names ("pool-*"), not to the semaphore's
// name; other requests keep their own name.
func TestSemaphoreReleaseScope(t *testing.T) {
	for _, c := range []struct {
		req  any
		want string
	}{
		{&pb.ReleaseRequest{Namespace: "a", Name: "pool", LeaveQueue: true, Semaphore: true}, "pool-0"},
		{&pb.ReleaseRequest{Namespace: "a", Name: "pool", LeaveQueue: true}, "pool"},
		{&pb.AcquireRequest{Namespace: "a", Name: "pool"}, "pool"},
	} {
		if ns, name := RequestScope(c.req); ns != "a" || name != c.want {
			t.Errorf("RequestScope(%v) = %s/%s, want a/%s", c.req, ns, name, c.want)
		}
	}
}
