package auth

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseBearer(t *testing.T) {
	long := strings.Repeat("a", maxTokenLen+1)
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER   abc", "abc", true},
		{"Bearer a-b_c.d~e+f/g==", "a-b_c.d~e+f/g==", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic abc", "", false},
		{"Bearerabc", "", false},
		{"Bearer a b", "", false},
		{"Bearer a=b", "", false},
		{"Bearer =", "", false},
		{"Bearer abc ", "", false},
		{"Bearer \tabc", "", false},
		{"Bearer ab\x00c", "", false},
		{"Bearer " + long, "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			got, err := ParseBearer(tt.header)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseBearer(%q): got %q, %v; want %q, ok=%v", tt.header, got, err, tt.want, tt.ok)
			}
			if err != nil && (!errors.Is(err, ErrUnauthenticated) || status.Code(err) != codes.Unauthenticated) {
				t.Fatalf("error %v is not an Unauthenticated auth error", err)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	toks, err := ParseTokenFile([]byte("tokens:\n- name: alice\n  groups: [team-a]\n  sha256: " + strings.ToUpper(HashToken("s3cret")) + "\n- {name: bob, sha256: " + HashToken("other") + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if toks.Len() != 2 {
		t.Errorf("Len: got %d, want 2", toks.Len())
	}
	id, ok := toks.Lookup("s3cret")
	if !ok || id.Name != "alice" || len(id.Groups) != 1 || id.Groups[0] != "team-a" || id.Source != SourceToken {
		t.Errorf("Lookup(good): got %+v, %v", id, ok)
	}
	id.Groups[0] = "changed"
	if again, _ := toks.Lookup("s3cret"); again.Groups[0] != "team-a" {
		t.Error("Lookup shares its groups slice with the caller")
	}
	for _, bad := range []string{"", "s3cre", "s3cret ", HashToken("s3cret")} {
		if _, ok := toks.Lookup(bad); ok {
			t.Errorf("Lookup(%q) succeeded", bad)
		}
	}

	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "tokens: [{name: a, token: plain}]", "unknown field"},
		{"no name", "tokens: [{sha256: " + HashToken("x") + "}]", "name is empty"},
		{"short hash", "tokens: [{name: a, sha256: abcd}]", "64 hex digits"},
		{"not hex", "tokens: [{name: a, sha256: " + strings.Repeat("z", 64) + "}]", "64 hex digits"},
		{"duplicate token", "tokens: [{name: a, sha256: " + HashToken("x") + "}, {name: b, sha256: " + HashToken("x") + "}]", `same token as "a"`},
		{"bad group", "tokens: [{name: a, groups: [\"\"], sha256: " + HashToken("x") + "}]", "groups is empty"},
		{"name with control character", "tokens: [{name: \"a\\nb\", sha256: " + HashToken("x") + "}]", "printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTokenFile([]byte(tt.yaml))
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
		})
	}
}

func TestHashToken(t *testing.T) {
	// sha256("foo"), a published test vector.
	if got, want := HashToken("foo"), "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"; got != want {
		t.Fatalf("HashToken: got %s, want %s", got, want)
	}
}
