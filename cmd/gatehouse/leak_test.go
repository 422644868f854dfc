package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity/mail/mailtest"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// TestNoSecretInLogsOrDumps runs Gatehouse end to end with secrets of
// every kind (database passwords, a Vault token, KV secrets, sealed
// values), through failures (Vault down, bad input), with logs at debug
// level; then searches everything it printed, Vault's log, and a
// pg_dumpall of the cluster, for each plaintext. None may appear.
func TestNoSecretInLogsOrDumps(t *testing.T) {
	// Not parallel: GATEHOUSE_APP_PASSWORD comes from the environment.
	ctx := context.Background()
	secret := func(what string) string {
		b := make([]byte, 12)
		rand.Read(b)
		return "plaintext-" + what + "-" + hex.EncodeToString(b)
	}
	appPassword, siloPassword := secret("app-password"), secret("silo-password")
	smtpPassword, sealedValue, userPassword := secret("smtp"), secret("sealed"), secret("user-password")
	t.Setenv("GATEHOUSE_APP_PASSWORD", appPassword)
	t.Setenv("GATEHOUSE_SMTP_PASSWORD", smtpPassword)
	catcher := mailtest.Start(t)
	spicedb := spicedbFlags(t)
	spicedbKey, err := os.ReadFile(spicedb[len(spicedb)-1])
	if err != nil {
		t.Fatal(err)
	}

	cluster := pgtest.Primary(t)
	vault := vaulttest.Start(t)
	c := &cli{t: t, url: cluster.URL(cluster.NewDatabase(t, "")), vault: vaultFlags(t, vault)}
	var printed strings.Builder // everything every command printed
	runLogged := func(stdin string, args ...string) int {
		code, out, errOut := c.run(stdin, args...)
		printed.WriteString(out + errOut)
		return code
	}
	siloCluster := strings.Replace(cluster.URL("postgres"), "postgres@", "postgres:"+siloPassword+"@", 1)

	if runLogged("", "migrate") != 0 ||
		runLogged("", "tenant", "create", "--slug", "acme", "--name", "Acme") != 0 ||
		runLogged("", "tenant", "create", "--slug", "globex", "--name", "Globex", "--placement", "silo", "--silo-cluster", siloCluster) != 0 {
		t.Fatalf("setup failed:\n%s", printed.String())
	}
	// Bad input that carries secrets: an unreachable cluster URL with a
	// password, a malformed one.
	runLogged("", "tenant", "create", "--slug", "initech", "--name", "Initech", "--placement", "silo",
		"--silo-cluster", "postgres://postgres:"+siloPassword+"@127.0.0.1:1/postgres?connect_timeout=2")
	runLogged("", "tenant", "create", "--slug", "initech", "--name", "Initech", "--placement", "silo",
		"--silo-cluster", "postgres://postgres:"+siloPassword+"@[::1")

	// Tenant secrets: one in KV, one sealed into a row.
	v := vault.Connect(t)
	cfg := config{DatabaseURL: c.url, BaseDomain: "localhost", Vault: vault.Config()}
	reg, closeReg, err := cfg.registry(ctx, stdio{err: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer closeReg()
	acme, err := reg.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(ctx, acme.ID, "smtp#password", smtpPassword); err != nil {
		t.Fatal(err)
	}
	adminDB := pgtest.Pool(t, c.url, 2)
	sealer := secrets.NewSealer(v, secrets.ControlPlane(adminDB), secrets.SealerOptions{})
	sealed, err := sealer.Seal(ctx, acme.ID, secrets.AAD("users", "display_name", "x"), []byte(sealedValue))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminDB.Exec(ctx, "create table public.sealed_probe (v bytea)"); err != nil {
		t.Fatal(err)
	}
	if _, err := adminDB.Exec(ctx, "insert into public.sealed_probe values ($1)", sealed); err != nil {
		t.Fatal(err)
	}

	// An app's client secret, first shown and then rotated: each shown
	// once, by the command that made it (kept out of the output searched
	// below), and nowhere else.
	clientSecrets := make([]string, 0, 2)
	var appID string
	for _, args := range [][]string{
		{"app", "create", "--tenant", "acme", "--name", "Portal", "--kind", "web", "--redirect-uri", "https://portal.acme.test/cb"},
		{"app", "rotate-secret", "--tenant", "acme"}, // the app's id follows
	} {
		if args[1] == "rotate-secret" {
			args = append(args, appID)
		}
		code, out, errOut := c.run("", args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", strings.Join(args[:2], " "), code, out, errOut)
		}
		printed.WriteString(errOut)
		secret := strings.TrimSpace(out)
		if m := regexp.MustCompile(`client secret:\s+(\S+)`).FindStringSubmatch(out); m != nil {
			secret = m[1]
		}
		if m := regexp.MustCompile(`(?m)^id:\s+(\S+)`).FindStringSubmatch(out); m != nil {
			appID = m[1]
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(secret) || slices.Contains(clientSecrets, secret) {
			t.Fatalf("%s printed no new client secret:\n%s", strings.Join(args[:2], " "), out)
		}
		clientSecrets = append(clientSecrets, secret)
	}

	// The server, logging everything, through a Vault outage.
	serveCtx, stop := context.WithCancel(ctx)
	serverLog := &syncBuffer{}
	serverOut := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(serveCtx, append([]string{"serve", "--database-url", c.url, "--addr", "127.0.0.1:0", "--log-level", "debug",
			"--smtp-url", "smtp://gatehouse@" + catcher.SMTPAddr() + "?tls=none"}, append(c.vault, spicedb...)...),
			stdio{nil, serverOut, serverLog})
	}()
	var addr string
	eventually(t, 10*time.Second, "server listening", func() bool {
		m := regexp.MustCompile(`"addr":"([^"]+)"`).FindStringSubmatch(serverLog.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	get := func(host, path string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, host := range []string{"acme.localhost", "globex.localhost", "nobody.localhost"} {
		get(host, "/v1/tenant")
	}
	// An account: its password, tokens and session cookie are secrets too.
	post := func(host, path, body string) (int, map[string]any, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out, res.Header.Get("Set-Cookie")
	}
	creds := `{"email":"ada@example.com","password":"` + userPassword + `"}`
	if code, _, _ := post("globex.localhost", "/v1/auth/signup", creds); code != 202 {
		t.Fatalf("signup: %d", code)
	}
	post("globex.localhost", "/v1/auth/login", `{"email":"ada@example.com","password":"`+userPassword+`-wrong"}`)
	_, tokens, _ := post("globex.localhost", "/v1/auth/login", creds)
	access, _ := tokens["access_token"].(string)
	refresh, _ := tokens["refresh_token"].(string)
	_, refreshed, _ := post("globex.localhost", "/v1/auth/token/refresh", `{"refresh_token":"`+refresh+`"}`)
	post("globex.localhost", "/v1/auth/token/refresh", `{"refresh_token":"`+refresh+`"}`) // reuse
	_, browser, cookie := post("globex.localhost", "/v1/auth/session", creds)
	csrf, _ := browser["csrf_token"].(string)
	next, _ := refreshed["refresh_token"].(string)
	if access == "" || refresh == "" || next == "" || csrf == "" || cookie == "" {
		t.Fatalf("sign-in did not hand out every secret: %v %v %v %q", tokens, refreshed, browser, cookie)
	}
	cookieValue := strings.SplitN(strings.SplitN(cookie, ";", 2)[0], "=", 2)[1]
	// Mailed tokens, which pass through the outbox on their way.
	if code, _, _ := post("globex.localhost", "/v1/auth/password/forgot", `{"email":"ada@example.com"}`); code != 202 {
		t.Fatalf("forgot: %d", code)
	}
	mails := catcher.Wait(t, "ada@example.com", 2, 20*time.Second)
	verifyToken, resetToken := mails[0].Token(t, "verify-email"), mails[1].Token(t, "reset-password")
	vault.Stop(t)
	eventually(t, 10*time.Second, "readyz reports Vault down", func() bool { return get("localhost", "/readyz") == 503 })
	runLogged("", "tenant", "create", "--slug", "hooli", "--name", "Hooli", "--placement", "silo", "--silo-cluster", siloCluster)
	vault.Restart(t)
	eventually(t, 10*time.Second, "readyz recovers", func() bool { return get("localhost", "/readyz") == 200 })
	if get("globex.localhost", "/v1/tenant") != 200 {
		t.Fatal("silo tenant not served after Vault came back")
	}
	stop()
	<-done

	dump := cluster.DumpAll(t)
	if !strings.Contains(dump, "sealed_probe") {
		t.Fatal("the dump misses the sealed value's table: the search below would prove nothing")
	}
	sources := map[string]string{
		"command output": printed.String(),
		"server log":     serverLog.String() + serverOut.String(),
		"vault log":      vault.Logs(),
		"pg_dumpall":     dump,
	}
	if !strings.Contains(sources["server log"], `"status":503`) {
		t.Fatalf("the server log shows no failure: the search below would miss error paths\n%s", sources["server log"])
	}
	plaintexts := map[string]string{
		"gatehouse_app's password": appPassword, "silo cluster password": siloPassword,
		"smtp password": smtpPassword, "sealed value": sealedValue, "vault token": vault.Token,
		"user password": userPassword, "access token": access, "refresh token": refresh,
		"rotated refresh token": next, "session cookie": cookieValue, "csrf token": csrf,
		"mailed confirmation token": verifyToken, "mailed reset token": resetToken, "spicedb key": string(spicedbKey),
		"client secret": clientSecrets[0], "rotated client secret": clientSecrets[1],
	}
	for where, text := range sources {
		for what, p := range plaintexts {
			if strings.Contains(text, p) {
				t.Errorf("%s holds the %s", where, what)
			}
		}
	}
	if !strings.Contains(printed.String(), "unreachable") || !strings.Contains(printed.String(), "secret store unavailable") {
		t.Fatalf("the failing commands did not fail as expected:\n%s", printed.String())
	}
}
