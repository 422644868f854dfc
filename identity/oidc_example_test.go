package identity_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse/gatehouse/tenancy"
)

// TestExampleWebAppSignsIn runs examples/webapp as the README shows it,
// against a listening Gatehouse, and signs in and out through it in a
// real headless Chromium: what a new user does first.
func TestExampleWebAppSignsIn(t *testing.T) {
	bin := chromiumPath(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain to build the example")
	}
	e, l := newServedEnv(t)
	browser := newChromium(t, bin)
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@acme.test")
	e.signup("acme", "ada@acme.test", goodPassword)

	// The example listens where its registration says.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	home := "http://" + addr
	app := e.createApp("acme", admin, map[string]any{"name": "Demo web app", "kind": "web", "first_party": true,
		"redirect_uris": []string{home + "/callback"}, "post_logout_redirect_uris": []string{home + "/"}})

	exe := filepath.Join(t.TempDir(), "webapp")
	build := exec.Command(goBin, "build", "-o", exe, "./examples/webapp")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := exec.CommandContext(ctx, exe, "-issuer", l.Issuer(tn), "-client-id", app.ClientID, "-addr", addr)
	run.Env = append(os.Environ(), "GATEHOUSE_CLIENT_SECRET="+app.ClientSecret)
	out := &lockedBuffer{}
	run.Stdout, run.Stderr = out, out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		run.Wait()
		if t.Failed() {
			t.Logf("the example's output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the example did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	form := visit(t, browser, home+"/login")
	if form.Host != "acme.localhost:"+strconv.Itoa(l.Port) || form.Path != "/oauth/login" {
		t.Fatalf("the example's sign-in led to %s: %q", form, shown(browser))
	}
	if err := chromedp.Do(browser,
		chromedp.SendKeys(chromedp.ID("email"), "ada@acme.test"),
		chromedp.SendKeys(chromedp.ID("password"), goodPassword),
	); err != nil {
		t.Fatal(err)
	}
	if back := submit(t, browser, `form button[type=submit]`); back.Host != addr {
		t.Fatalf("the sign-in ended at %s: %q", back, shown(browser))
	}
	if page := shown(browser); !strings.Contains(page, "Signed in as") || !strings.Contains(page, "ada@acme.test") {
		t.Fatalf("the example shows %q", page)
	}
	// Sign out: through acme's logout, back to the example, signed out.
	if back := submit(t, browser, `form[action="/logout"] button`); back.Host != addr || back.Path != "/" {
		t.Fatalf("signing out ended at %s: %q", back, shown(browser))
	}
	if page := shown(browser); !strings.Contains(page, "Sign in") || strings.Contains(page, "Signed in as") {
		t.Fatalf("after signing out the example shows %q", page)
	}
}
