package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// The seed corpora live in testdata/fuzz/<FuzzName>; f.Add adds a few more
// so the fuzzers run meaningfully from a clean checkout too.

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte("roles: [{name: r, rules: [{namespaces: [\"t-*\"], verbs: [\"*\"], names: [x]}]}]\nbindings: [{role: r, subjects: [{kind: group, name: system:authenticated}]}]"))
	verbs := append([]string{"", "bogus"}, knownVerbs...)
	ids := []Identity{
		{},
		Anonymous,
		{Name: "alice", Source: SourceCert},
		{Name: "r", Groups: []string{"admins", "leasekeeper:nodes"}, Source: SourceToken},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		_ = p.String()
		for _, id := range ids {
			for _, v := range verbs {
				for _, ns := range []string{"", "team-a", AllNamespaces, "t-x"} {
					err := p.Authorize(id, v, ns, "x")
					if err != nil && !errors.Is(err, ErrPermissionDenied) {
						t.Fatalf("Authorize error %v does not wrap ErrPermissionDenied", err)
					}
					if err == nil && (id.Name == "" || v == "" || v == VerbAll || v == "bogus") {
						t.Fatalf("Authorize(%+v, %q, %q) allowed", id, v, ns)
					}
				}
			}
			if !p.MayActAs(id, id.Name) {
				t.Fatalf("MayActAs(%+v, own name) = false", id)
			}
		}
	})
}

func FuzzParseTokenFile(f *testing.F) {
	f.Add([]byte("tokens:\n- {name: alice, groups: [a, b], sha256: " + HashToken("t") + "}\n"))
	f.Add([]byte("tokens: []"))
	f.Fuzz(func(t *testing.T, data []byte) {
		toks, err := ParseTokenFile(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		for _, e := range toks.entries {
			if !validName(e.id.Name) || e.id.Source != SourceToken {
				t.Fatalf("accepted entry %+v", e.id)
			}
			for _, g := range e.id.Groups {
				if !validName(g) {
					t.Fatalf("accepted group %q", g)
				}
			}
		}
		for _, tok := range []string{"", "t", string(data)} {
			if id, ok := toks.Lookup(tok); ok && id.Name == "" {
				t.Fatalf("Lookup(%q) returned an empty identity", tok)
			}
		}
		if _, ok := toks.Lookup(""); ok {
			t.Fatal("the empty token was accepted")
		}
	})
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  a-b_c.d~e+f/g==", "Basic x", "Bearer", "Bearer a=b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := ParseBearer(header)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		if tok == "" || len(tok) > maxTokenLen || !isToken68(tok) || !strings.HasSuffix(header, tok) {
			t.Fatalf("ParseBearer(%q) = %q", header, tok)
		}
		if again, err := ParseBearer("Bearer " + tok); err != nil || again != tok {
			t.Fatalf("round trip of %q: got %q, %v", tok, again, err)
		}
	})
}

// FuzzForwardedIdentity checks the forwarding rule with any headers: only a
// node may end up authenticated as someone other than itself.
func FuzzForwardedIdentity(f *testing.F) {
	f.Add(true, "node-1", "alice", "team-a,admins", "mtls")
	f.Add(false, "node-1", "root", "admins", "token")
	f.Add(true, "", "", "", "")
	f.Add(false, "", "", "", "")
	f.Add(true, "n", "a\x00b", "", "none")
	dir := f.TempDir()
	policy, tokens := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(policy, []byte(testPolicy), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(tokens, []byte("tokens:\n- {name: node-1, groups: [\"leasekeeper:nodes\"], sha256: "+HashToken("node")+"}\n- {name: user, sha256: "+HashToken("user")+"}\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Mode, cfg.PolicyFile, cfg.TokenFile = ModeToken, policy, tokens
	a, err := New(cfg, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, node bool, fwd, ident, groups, source string) {
		caller := "user"
		if node {
			caller = "node-1"
		}
		kv := []string{MDAuthorization, "Bearer " + map[bool]string{true: "node", false: "user"}[node]}
		if fwd != "" {
			kv = append(kv, MDForwardedBy, fwd)
		}
		if ident != "" {
			kv = append(kv, MDIdentity, ident)
		}
		for _, g := range strings.Split(groups, ",") {
			if g != "" {
				kv = append(kv, MDGroups, g)
			}
		}
		if source != "" {
			kv = append(kv, MDSource, source)
		}
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
		id, err := a.Authenticate(ctx)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrPermissionDenied) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return
		}
		if id.Name != caller && !node {
			t.Fatalf("non-node %q authenticated as %+v", caller, id)
		}
		if !validName(id.Name) {
			t.Fatalf("identity with an invalid name: %+v", id)
		}
		if !node && len(kv) > 2 {
			t.Fatalf("non-node with forwarding headers %v accepted", kv[2:])
		}
	})
}
