package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/feed/api"
)

// selfSigned writes a certificate for 127.0.0.1 and its key; it returns
// the files and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rtbh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestConfigChecks(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"loopback plaintext": {Config{Listen: "127.0.0.1:8080"}, ""},
		"localhost":          {Config{Listen: "localhost:8080"}, ""},
		"tls anywhere":       {Config{Listen: "0.0.0.0:8443", TLSCert: certFile, TLSKey: keyFile}, ""},
		"plaintext off loopback": {Config{Listen: "0.0.0.0:8080"},
			`web.listen: "0.0.0.0:8080" is not a loopback address: plaintext HTTP is refused, set web.tls.cert and web.tls.key`},
		"no port":          {Config{Listen: "127.0.0.1"}, "web.listen: address 127.0.0.1: missing port in address"},
		"cert without key": {Config{Listen: "127.0.0.1:8080", TLSCert: certFile}, "web.tls.key: required with web.tls.cert"},
		"key without cert": {Config{Listen: "127.0.0.1:8080", TLSKey: keyFile}, "web.tls.cert: required with web.tls.key"},
		"unreadable":       {Config{Listen: "127.0.0.1:8443", TLSCert: keyFile, TLSKey: certFile}, "loading web.tls.cert/key: "},
	} {
		err := Check(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

// TestServeTLS: over TLS the session cookie is Secure; stopping Serve ends
// an open event stream and returns promptly.
func TestServeTLS(t *testing.T) {
	e := newEnv(t, envOpts{})
	certFile, keyFile, pool := selfSigned(t)
	w, err := New(Config{Listen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile}, e.api, e.manager, e.db, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	defer cancel()
	base := "https://" + w.Addr().String()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(base+"/login", url.Values{"token": {opToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == CookieName {
			ck = k
		}
	}
	if resp.StatusCode != http.StatusSeeOther || ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login over TLS: %d, cookie %+v", resp.StatusCode, ck)
	}
	// Plain HTTP to the TLS port gets nowhere.
	if r, err := http.Get("http://" + w.Addr().String() + "/login"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Fatal("plaintext request answered 200 on the TLS listener")
		}
	}
	ev, err := c.Get(base + "/events")
	if err != nil || ev.StatusCode != http.StatusOK {
		t.Fatalf("/events: %v %v", ev, err)
	}
	defer ev.Body.Close()
	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(7 * time.Second):
		t.Fatal("Serve did not return within 7 s with an event stream open")
	}
	if took := time.Since(stopped); took > 2*time.Second {
		t.Errorf("Serve took %s to stop with an event stream open", took)
	}
}

// TestReloadEndsSessions: a client removed (or whose token changed) by a
// config reload loses its sessions at once; others keep theirs.
func TestReloadEndsSessions(t *testing.T) {
	e := newEnv(t, envOpts{})
	op, partner := e.browser(t), e.browser(t)
	op.login(opToken)
	partner.login(partnerToken)
	if err := e.api.SetClients([]api.Client{
		{Name: "noc", Role: api.RoleOperator, TokenSHA256: sha256.Sum256([]byte("a new token")), HasToken: true, Rate: 1000},
		{Name: "isp-b", Role: api.RolePartner, TokenSHA256: sha256.Sum256([]byte(partnerToken)), HasToken: true, Rate: 1000,
			Prefixes: e.partnerPrefixes(), Trust: 0.5},
	}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := op.get("/"); code != http.StatusSeeOther {
		t.Fatalf("operator whose token changed: %d, want a redirect to the login", code)
	}
	if code, _, _ := partner.get("/"); code != http.StatusOK {
		t.Fatalf("unchanged partner: %d", code)
	}
	if code, _, _ := op.post("/login", url.Values{"token": {opToken}}); code != http.StatusUnauthorized {
		t.Fatalf("old token after reload: %d", code)
	}
}
