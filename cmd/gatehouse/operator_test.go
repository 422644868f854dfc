package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

func TestOperatorTokenCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")

	code, out, errOut := c.run("", "operator", "token", "create", "alice", "--scope", "move,read", "--expires-in", "720h")
	if code != 0 || !strings.HasPrefix(out, "gho_") || !strings.Contains(errOut, "with scope read,move, expires ") {
		t.Fatalf("token create: exit %d\n%s%s", code, out, errOut)
	}
	c.must("operator", "token", "create", "bob") // the defaults
	c.fails(1, "--expires-in must be from 1m to 8760h", "operator", "token", "create", "carol", "--expires-in", "0s")
	c.fails(1, "--expires-in must be from 1m to 8760h", "operator", "token", "create", "carol", "--expires-in", "-1h")
	c.fails(1, "--expires-in must be from 1m to 8760h", "operator", "token", "create", "carol", "--expires-in", "87600h")
	c.fails(2, "expires-in", "operator", "token", "create", "carol", "--expires-in", "90d")
	c.fails(1, `--scope: scope: "admin" is not one of read, move, retire`, "operator", "token", "create", "carol", "--scope", "read,admin")
	c.fails(1, `--scope: scope: "" is not one of`, "operator", "token", "create", "carol", "--scope", "")
	c.fails(2, "flag provided but not defined: -scope", "operator", "token", "list", "--scope", "read")

	var list []tenancy.OperatorToken
	if err := json.Unmarshal([]byte(c.must("operator", "token", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
		t.Fatalf("tokens: %+v", list)
	}
	within := func(got time.Time, ttl time.Duration) bool {
		left := time.Until(got)
		return left > ttl-time.Minute && left <= ttl
	}
	if got := scopeList(list[0].Scopes); got != "read,move" || !within(list[0].Expires, 720*time.Hour) {
		t.Fatalf("alice's token: %+v", list[0])
	}
	if got := scopeList(list[1].Scopes); got != "read" || !within(list[1].Expires, 90*24*time.Hour) {
		t.Fatalf("bob's token, made with the defaults: %+v", list[1])
	}
	table := c.must("operator", "token", "list")
	if !strings.Contains(table, "SCOPES") || !strings.Contains(table, "EXPIRES") ||
		!strings.Contains(table, "read,move") || !strings.Contains(table, list[0].Expires.UTC().Format(time.DateTime)) {
		t.Fatalf("token list:\n%s", table)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and localhost, valid for
// an hour, and its key to dir, and returns their files and the
// certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gatehouse operator API"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "operator.crt"), filepath.Join(dir, "operator.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

func TestOperatorAPIServesHTTPS(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	token := strings.TrimSpace(c.must("operator", "token", "create", "alice"))
	certFile, keyFile, cert := selfSigned(t, t.TempDir())

	var cfg config
	fs := flag.NewFlagSet("operator serve", flag.ContinueOnError)
	cfg.flags(fs)
	if err := fs.Parse(append([]string{"--database-url", c.url, "--log-level", "warn"}, c.vault...)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	l := operatorListen{Addr: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile}
	go func() {
		done <- serveOperator(ctx, cfg, l, stdio{nil, io.Discard, logs}, func(addr string) { ready <- addr })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("operator serve: %v", err)
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("operator serve: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("operator serve did not start")
	}

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	get := func(client *http.Client, url string) (*http.Response, string, error) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b), nil
	}
	client := func(max uint16) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: max},
		}}
	}
	res, body, err := get(client(0), "https://"+addr+"/v1/operator/tenants/acme/moves")
	if err != nil || res.StatusCode != 200 || !strings.Contains(body, `"moves":[]`) {
		t.Fatalf("over HTTPS: %v %v %s", res, err, body)
	}
	if res.TLS == nil || res.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("TLS state: %+v", res.TLS)
	}
	// Nothing older than TLS 1.2, and no plain HTTP on the TLS port.
	if res, _, err := get(client(tls.VersionTLS11), "https://"+addr+"/v1/operator/tenants/acme/moves"); err == nil {
		t.Fatalf("a TLS 1.1 client was served: %d", res.StatusCode)
	}
	if res, _, err := get(client(0), "http://"+addr+"/v1/operator/tenants/acme/moves"); err == nil && res.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS port")
	}
}

// operatorServe runs "operator serve" with args, for at most a few
// seconds (a refused configuration ends it at once), and returns its exit
// code and error output.
func operatorServe(t *testing.T, c *cli, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	args = append(append(append([]string{"operator", "serve"}, args...), "--database-url", c.url, "--log-level", "error"), c.vault...)
	code := run(ctx, args, stdio{nil, &out, &errOut})
	if ctx.Err() != nil {
		t.Fatalf("operator serve %s started", strings.Join(args, " "))
	}
	return code, errOut.String()
}

func TestOperatorAPIRefusesPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	// The address is refused before anything is reached: a database that
	// cannot be reached would fail differently.
	c := &cli{t: t, url: "postgres://nobody@127.0.0.1:1/gatehouse"}
	dir := t.TempDir()
	certFile, keyFile, _ := selfSigned(t, dir)
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.10:8090", "gatehouse.example:8090"} {
		code, errOut := operatorServe(t, c, "--operator-addr", addr)
		if code != 1 || !strings.Contains(errOut, "the operator API would listen on "+addr+" without TLS: give --operator-tls-cert and --operator-tls-key") {
			t.Fatalf("operator serve on %s without TLS: exit %d, %q", addr, code, errOut)
		}
	}
	if code, errOut := operatorServe(t, c, "--operator-addr", "0.0.0.0:0", "--operator-tls-cert", certFile); code != 1 || !strings.Contains(errOut, "give both --operator-tls-cert and --operator-tls-key") {
		t.Fatalf("a certificate without its key: exit %d, %q", code, errOut)
	}
	if code, errOut := operatorServe(t, c, "--operator-addr", "127.0.0.1:0", "--operator-tls-cert", keyFile, "--operator-tls-key", keyFile); code != 1 || !strings.Contains(errOut, "cannot load the operator API's TLS certificate and key") {
		t.Fatalf("a key for a certificate: exit %d, %q", code, errOut)
	}
	missing := filepath.Join(dir, "missing.crt")
	if code, errOut := operatorServe(t, c, "--operator-addr", "127.0.0.1:0", "--operator-tls-cert", missing, "--operator-tls-key", keyFile); code != 1 || !strings.Contains(errOut, missing) {
		t.Fatalf("a missing certificate: exit %d, %q", code, errOut)
	}
}

func TestOperatorTLSFilesComeFromTheEnvironment(t *testing.T) {
	// Not parallel: it sets the environment.
	t.Setenv("GATEHOUSE_OPERATOR_ADDR", "0.0.0.0:0")
	t.Setenv("GATEHOUSE_OPERATOR_TLS_CERT", filepath.Join(t.TempDir(), "operator.crt"))
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code := run(ctx, []string{"operator", "serve"}, stdio{nil, &out, &errOut}); code != 1 || !strings.Contains(errOut.String(), "give both --operator-tls-cert and --operator-tls-key") {
		t.Fatalf("operator serve with only GATEHOUSE_OPERATOR_TLS_CERT: exit %d, %q", code, errOut.String())
	}
}

func TestLoopbackAddresses(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8090":        true,
		"127.3.2.1:8090":        true,
		"[::1]:8090":            true,
		"localhost:8090":        true,
		"LOCALHOST:0":           true,
		"[::ffff:127.0.0.1]:80": true,
		"0.0.0.0:8090":          false,
		":8090":                 false,
		"[::]:8090":             false,
		"10.0.0.1:8090":         false,
		"128.0.0.1:8090":        false,
		"localhost.example:80":  false,
		"127.0.0.1":             false, // no port: not an address to listen on
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
