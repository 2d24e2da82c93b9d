package tlsutil

import (
	"crypto/x509"
	"slices"
)

// NodeGroup is the certificate Organization (and auth group) that marks a
// leasekeeper node. Only nodes may speak Raft and forward requests on behalf
// of other callers.
const NodeGroup = "leasekeeper:nodes"

// SPIFFEPrefix starts the URI SAN that GenerateCert writes with WithSPIFFE.
const SPIFFEPrefix = "spiffe://leasekeeper/"

// CertIdentity returns who a certificate names: its first URI SAN when it has
// one, else its Common Name; its Organization values are the groups. ok is
// false when the certificate names nobody.
func CertIdentity(cert *x509.Certificate) (name string, groups []string, ok bool) {
	if cert == nil {
		return "", nil, false
	}
	for _, u := range cert.URIs {
		if s := u.String(); s != "" {
			name = s
			break
		}
	}
	if name == "" {
		name = cert.Subject.CommonName
	}
	if name == "" {
		return "", nil, false
	}
	return name, slices.Clone(cert.Subject.Organization), true
}

// inGroups reports whether cert's Organization holds one of groups.
func inGroups(cert *x509.Certificate, groups []string) bool {
	for _, o := range cert.Subject.Organization {
		if slices.Contains(groups, o) {
			return true
		}
	}
	return false
}
