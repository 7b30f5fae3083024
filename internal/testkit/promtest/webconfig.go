package promtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// WebConfig is a Prometheus web configuration (exporter-toolkit's
// --web.config.file) made for a test: TLS with a self-signed certificate
// for 127.0.0.1 and localhost, and one basic-auth user.
type WebConfig struct {
	// Path is the web configuration file; it names the certificate and
	// key by paths relative to its directory.
	Path string
	// CAFile is the certificate, which clients trust as their CA.
	CAFile string
	// Pool holds the certificate.
	Pool *x509.CertPool
	// User and Password are the basic-auth credentials; PasswordFile
	// holds the password (for Prometheus's basic_auth.password_file).
	User, Password, PasswordFile string
}

// NewWebConfig writes a web configuration, certificate, key and password
// file under dir, all mode 0600.
func NewWebConfig(t testing.TB, dir, user, password string) WebConfig {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "connwatch test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The lowest cost keeps the test fast; real files use 10 or more.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	w := WebConfig{
		Path: filepath.Join(dir, "web-config.yml"), CAFile: filepath.Join(dir, "metrics.crt"),
		User: user, Password: password, PasswordFile: filepath.Join(dir, "metrics.pw"),
	}
	for path, data := range map[string][]byte{
		w.CAFile:                          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		filepath.Join(dir, "metrics.key"): pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		w.PasswordFile:                    []byte(password + "\n"),
		w.Path: []byte(fmt.Sprintf(`tls_server_config:
  cert_file: metrics.crt
  key_file: metrics.key
basic_auth_users:
  %s: %s
`, user, hash)),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	w.Pool = x509.NewCertPool()
	w.Pool.AddCert(cert)
	return w
}
