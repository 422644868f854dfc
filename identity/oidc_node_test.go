package identity_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

// TestCodeFlowWithOpenIDClient signs a user in to a listening Gatehouse
// with Node.js and the npm package openid-client (v6), unmodified:
// testdata/openid-client.mjs runs discovery, the authorization code flow
// with PKCE through the hosted sign-in, the code exchange with its strict
// checks of iss, aud, nonce and at_hash, and userinfo.
func TestCodeFlowWithOpenIDClient(t *testing.T) {
	node := toolPath(t, "GATEHOUSE_NODE_BIN", "node")
	modules := os.Getenv("GATEHOUSE_NODE_MODULES")
	if _, err := os.Stat(modules + "/openid-client/package.json"); modules == "" || err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("GATEHOUSE_NODE_MODULES=%q holds no openid-client (tools/test.sh installs it)", modules)
		}
		t.Skipf("GATEHOUSE_NODE_MODULES=%q holds no openid-client: run tools/test.sh", modules)
	}
	e, l := newServedEnv(t)
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@acme.test")
	e.signup("acme", "ada@acme.test", goodPassword)
	ada := e.env.Client(t).Me("acme", e.login("acme", "ada@acme.test", goodPassword).AccessToken)
	app := e.createApp("acme", admin, map[string]any{"name": "Node", "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://node.example.com/callback"}})

	args, _ := json.Marshal(map[string]string{"issuer": l.Issuer(tn), "client_id": app.ClientID, "client_secret": app.ClientSecret,
		"redirect_uri": app.RedirectURIs[0], "email": "ada@acme.test", "password": goodPassword})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/openid-client.mjs", string(args))
	cmd.Env = append(os.Environ(), "GATEHOUSE_NODE_MODULES="+modules)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openid-client: %v\n%s%s", err, stderr.String(), stdout.String())
	}

	var got struct {
		Issuer         string   `json:"issuer"`
		RedirectParams []string `json:"redirect_params"`
		TokenType      string   `json:"token_type"`
		AccessToken    bool     `json:"access_token"`
		IDToken        bool     `json:"id_token"`
		SentNonce      string   `json:"sent_nonce"`
		Claims         struct {
			Iss, Sub, Nonce, Email string
			Aud                    []string
		} `json:"claims"`
		UserInfo struct{ Sub, Email string } `json:"userinfo"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("openid-client printed %q: %v", stdout.String(), err)
	}
	if got.Issuer != l.Issuer(tn) || got.Claims.Iss != l.Issuer(tn) {
		t.Errorf("issuer %q, ID token iss %q; want %q", got.Issuer, got.Claims.Iss, l.Issuer(tn))
	}
	if !slices.Equal(got.RedirectParams, []string{"code", "iss", "state"}) {
		t.Errorf("the app got back %v; want code, iss and state", got.RedirectParams)
	}
	if !got.AccessToken || !got.IDToken || !strings.EqualFold(got.TokenType, "Bearer") {
		t.Errorf("tokens: access %v, ID %v, type %q", got.AccessToken, got.IDToken, got.TokenType)
	}
	if got.Claims.Sub != ada.ID.String() || !slices.Equal(got.Claims.Aud, []string{app.ClientID}) || got.Claims.Email != "ada@acme.test" ||
		got.Claims.Nonce == "" || got.Claims.Nonce != got.SentNonce {
		t.Errorf("ID token claims %+v; want sub %s, aud %s", got.Claims, ada.ID, app.ClientID)
	}
	if got.UserInfo.Sub != ada.ID.String() || got.UserInfo.Email != "ada@acme.test" {
		t.Errorf("userinfo %+v", got.UserInfo)
	}
}
