package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// Certs are a test CA and two certificates it signed: a server's for
// 127.0.0.1, and a client's. All PEM.
type Certs struct {
	CA                    []byte
	ServerCert, ServerKey []byte
	ClientCert, ClientKey []byte
}

// NewCerts makes a fresh CA and its certificates, valid for an hour.
func NewCerts(t testing.TB) Certs {
	t.Helper()
	caKey, caPEM, ca := certificate(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "docexec test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
	serverKey, serverPEM, _ := certificate(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "kafka"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
	clientKey, clientPEM, _ := certificate(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "docexec"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
	return Certs{CA: caPEM, ServerCert: serverPEM, ServerKey: keyPEM(t, serverKey), ClientCert: clientPEM, ClientKey: keyPEM(t, clientKey)}
}

// ServerRequiringClients returns the server's TLS settings that accept
// only clients with a certificate the CA signed (mutual TLS).
func (c Certs) ServerRequiringClients(t testing.TB) *tls.Config {
	t.Helper()
	pair, err := tls.X509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatalf("server key pair: %v", err)
	}
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(c.CA)
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients, MinVersion: tls.VersionTLS12}
}

// certificate makes a key and a certificate from template, signed by
// parent's key (self-signed when parent is nil).
func certificate(t testing.TB, template, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	template.SerialNumber = serial
	template.NotBefore, template.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("create certificate %s: %v", template.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate %s: %v", template.Subject.CommonName, err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert
}

func keyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
