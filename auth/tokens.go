package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// maxFileSize bounds the token and policy files.
const maxFileSize = 1 << 20

// maxTokenLen bounds a bearer token.
const maxTokenLen = 4096

// HashToken returns the hex SHA-256 of token, the form the token file
// stores. Tokens should be long random strings (32 bytes from crypto/rand,
// base64url), which makes an unsalted fast hash safe.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokenFile is the YAML form of the token file:
//
//	tokens:
//	- name: alice
//	  groups: [team-a]
//	  sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens"`
}

// TokenEntry is one token: the identity it proves and its hash.
type TokenEntry struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
	SHA256 string   `json:"sha256"`
}

// Tokens is a parsed token file, ready to check tokens. It is read-only.
type Tokens struct {
	entries []token
}

type token struct {
	id   Identity
	hash [sha256.Size]byte
}

// LoadTokenFile reads and parses a token file.
func LoadTokenFile(path string) (*Tokens, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTokenFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseTokenFile parses the YAML token file; unknown fields are errors, so
// a typo does not silently drop a setting.
func ParseTokenFile(data []byte) (*Tokens, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: token file is larger than %d bytes", ErrInvalidConfig, maxFileSize)
	}
	var f TokenFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%w: token file: %v", ErrInvalidConfig, err)
	}
	t := &Tokens{entries: make([]token, 0, len(f.Tokens))}
	seen := make(map[[sha256.Size]byte]string, len(f.Tokens))
	for i, e := range f.Tokens {
		if err := checkName("tokens", i, "name", e.Name); err != nil {
			return nil, err
		}
		for _, g := range e.Groups {
			if err := checkName("tokens", i, "groups", g); err != nil {
				return nil, err
			}
		}
		raw, err := hex.DecodeString(e.SHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("%w: tokens[%d] (%q): sha256 must be %d hex digits (see HashToken)", ErrInvalidConfig, i, e.Name, 2*sha256.Size)
		}
		var h [sha256.Size]byte
		copy(h[:], raw)
		if other, dup := seen[h]; dup {
			return nil, fmt.Errorf("%w: tokens[%d] (%q) has the same token as %q", ErrInvalidConfig, i, e.Name, other)
		}
		seen[h] = e.Name
		t.entries = append(t.entries, token{
			id:   Identity{Name: e.Name, Groups: append([]string(nil), e.Groups...), Source: SourceToken},
			hash: h,
		})
	}
	return t, nil
}

// Lookup returns the identity of a bearer token. It hashes the token and
// compares the hash with every entry in constant time.
func (t *Tokens) Lookup(tok string) (Identity, bool) {
	if t == nil || tok == "" {
		return Identity{}, false
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range t.entries {
		if subtle.ConstantTimeCompare(sum[:], t.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, false
	}
	id := t.entries[found].id
	id.Groups = append([]string(nil), id.Groups...)
	return id, true
}

// Len returns how many tokens the file holds (0 for a nil *Tokens).
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// ParseBearer returns the token of an "authorization" value of the form
// "Bearer <token>" (the scheme in any case). The token must be RFC 6750
// token68 characters (letters, digits, "-._~+/", then "=" padding) and at
// most 4096 bytes.
func ParseBearer(header string) (string, error) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", unauthenticated("authorization is not of the form \"Bearer <token>\"")
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" {
		return "", unauthenticated("empty bearer token")
	}
	if len(tok) > maxTokenLen {
		return "", unauthenticated("bearer token is longer than %d bytes", maxTokenLen)
	}
	if !isToken68(tok) {
		return "", unauthenticated("bearer token has characters outside [A-Za-z0-9-._~+/] and trailing '='")
	}
	return tok, nil
}

func isToken68(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
		if !ok {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// checkName accepts a name or group: non-empty, at most 1024 bytes of
// printable ASCII, no space at either end, so it survives gRPC metadata.
func checkName(list string, i int, field, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s[%d]: %s is empty", ErrInvalidConfig, list, i, field)
	}
	if !validName(v) {
		return fmt.Errorf("%w: %s[%d]: %s %q must be at most %d printable ASCII characters, without spaces at the ends", ErrInvalidConfig, list, i, field, v, maxNameLen)
	}
	return nil
}

const maxNameLen = 1024

func validName(v string) bool {
	if v == "" || len(v) > maxNameLen {
		return false
	}
	if v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrInvalidConfig, path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidConfig, path, maxFileSize)
	}
	return data, nil
}
