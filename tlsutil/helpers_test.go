package tlsutil

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pki is a test PKI: a CA in dir/ca, another in dir/other, certificates in
// dir/certs.
type pki struct {
	t        *testing.T
	dir      string
	ca       string // CA directory
	other    string // unrelated CA directory
	certs    string
	loopback []net.IP
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{t: t, dir: dir, ca: filepath.Join(dir, "ca"), other: filepath.Join(dir, "other"), certs: filepath.Join(dir, "certs"),
		loopback: []net.IP{net.IPv4(127, 0, 0, 1)}}
	if _, _, err := GenerateCA(p.ca, "test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateCA(p.other, "other CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	return p
}

// node makes a node certificate (client and server, NodeGroup, loopback
// SANs) signed by caDir.
func (p *pki) node(caDir, name string, opts ...CertOption) (cert, key string) {
	p.t.Helper()
	opts = append([]CertOption{WithGroups(NodeGroup)}, opts...)
	cert, key, err := GenerateCert(caDir, p.certs, name, []string{"localhost"}, p.loopback, true, true, opts...)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

// client makes a client-only certificate signed by caDir.
func (p *pki) client(caDir, name string, opts ...CertOption) (cert, key string) {
	p.t.Helper()
	cert, key, err := GenerateCert(caDir, p.certs, name, nil, nil, true, false, opts...)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

func (p *pki) caFile(caDir string) string { return filepath.Join(caDir, CACertFile) }

// bundle writes a CA bundle holding the given CAs and returns its path.
func (p *pki) bundle(name string, caDirs ...string) string {
	p.t.Helper()
	var b strings.Builder
	for _, d := range caDirs {
		data, err := os.ReadFile(p.caFile(d))
		if err != nil {
			p.t.Fatal(err)
		}
		b.Write(data)
	}
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// testLogger sends hclog output to t.Log until the test ends; Raft's
// goroutines may still log while they stop.
func testLogger(t *testing.T) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: w, Level: hclog.Debug})
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

var _ io.Writer = (*testWriter)(nil)
