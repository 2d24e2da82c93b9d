package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// File names in a CA directory made by GenerateCA.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// DefaultCertValidity is how long GenerateCert's certificates last unless
// WithValidity says otherwise (never past the CA's own end).
const DefaultCertValidity = 365 * 24 * time.Hour

// clockSkew backdates certificates so a peer whose clock is a little behind
// accepts them at once.
const clockSkew = 5 * time.Minute

var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CertOption adjusts a certificate made by GenerateCert.
type CertOption func(*certOptions)

type certOptions struct {
	groups   []string
	uris     []*url.URL
	spiffe   bool
	validity time.Duration
}

// WithGroups sets the certificate's Organization values, which leasekeeper
// reads as the identity's groups (NodeGroup for a node).
func WithGroups(groups ...string) CertOption {
	return func(o *certOptions) { o.groups = append(o.groups, groups...) }
}

// WithSPIFFE adds the URI SAN spiffe://leasekeeper/<name>, which then is the
// identity instead of the Common Name.
func WithSPIFFE() CertOption { return func(o *certOptions) { o.spiffe = true } }

// WithURI adds a URI SAN; the first URI SAN is the identity.
func WithURI(u *url.URL) CertOption {
	return func(o *certOptions) { o.uris = append(o.uris, u) }
}

// WithValidity sets how long the certificate lasts.
func WithValidity(d time.Duration) CertOption { return func(o *certOptions) { o.validity = d } }

// GenerateCA writes a new self-signed ECDSA P-256 CA named name to
// dir/ca.crt and dir/ca.key (mode 0600). It refuses to replace an existing
// CA key (the error matches fs.ErrExist), since that would orphan every
// certificate it signed. It is meant for development and tests.
func GenerateCA(dir, name string, validity time.Duration) (certFile, keyFile string, err error) {
	if name == "" || validity <= 0 {
		return "", "", fmt.Errorf("%w: a CA needs a name and a positive validity", ErrConfig)
	}
	certFile, keyFile = filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if _, err := os.Stat(keyFile); err == nil {
		return "", "", fmt.Errorf("tlsutil: CA key %s: %w", keyFile, fs.ErrExist)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"leasekeeper"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// GenerateCert writes outDir/<name>.crt and outDir/<name>.key (mode 0600): an
// ECDSA P-256 certificate signed by the CA in caDir, with Common Name name,
// the given DNS and IP SANs, and client and/or server key usage. Existing
// files are replaced atomically, so a running node can Reload them. A node
// needs isClient and isServer and WithGroups(NodeGroup).
func GenerateCert(caDir, outDir, name string, dnsNames []string, ips []net.IP, isClient, isServer bool, opts ...CertOption) (certFile, keyFile string, err error) {
	if !fileName.MatchString(name) {
		return "", "", fmt.Errorf("%w: certificate name %q must be letters, digits, '.', '_' or '-'", ErrConfig, name)
	}
	if !isClient && !isServer {
		return "", "", fmt.Errorf("%w: certificate %q is for neither clients nor servers", ErrConfig, name)
	}
	o := certOptions{validity: DefaultCertValidity}
	for _, opt := range opts {
		opt(&o)
	}
	if o.validity <= 0 {
		return "", "", fmt.Errorf("%w: certificate %q needs a positive validity", ErrConfig, name)
	}
	ca, err := tls.LoadX509KeyPair(filepath.Join(caDir, CACertFile), filepath.Join(caDir, CAKeyFile))
	if err != nil {
		return "", "", fmt.Errorf("tlsutil: loading CA from %s: %w", caDir, err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	uris := o.uris
	if o.spiffe {
		uris = append([]*url.URL{{Scheme: "spiffe", Host: "leasekeeper", Path: "/" + name}}, uris...)
	}
	now := time.Now()
	notAfter := now.Add(o.validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: o.groups},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		URIs:                  uris,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if isServer {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if isClient {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(outDir, name+".crt"), filepath.Join(outDir, name+".key")
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path atomically, so a reader sees the old file or the
// new one, never a part.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := pem.Encode(tmp, &pem.Block{Type: typ, Bytes: der}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
