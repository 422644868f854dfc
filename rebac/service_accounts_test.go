package rebac_test

import (
	"context"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/tenancy"
)

// machineApp registers a machine app on host as admin and returns its id
// and a client_credentials config for it.
func (e *env) machineApp(host, admin, name string) (string, clientcredentials.Config) {
	e.t.Helper()
	var a struct {
		ID           string `json:"id"`
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	e.Must(201, "POST", host, "/v1/admin/apps", admin, map[string]any{"name": name, "kind": "machine"}).JSON(e.t, &a)
	return a.ID, clientcredentials.Config{ClientID: a.ClientID, ClientSecret: a.ClientSecret,
		TokenURL: "https://" + host + ".gatehouse.test/oauth/token"}
}

// appToken gets a machine app's own access token.
func (e *env) appToken(cc clientcredentials.Config) string {
	e.t.Helper()
	tok, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, e.HTTPClient()))
	if err != nil {
		e.t.Fatalf("client_credentials: %v", err)
	}
	return tok.AccessToken
}

// checkStatus is the status the check API answers token.
func (e *env) checkStatus(host, token string) int {
	e.t.Helper()
	return e.Do("POST", host, "/v1/permissions/check", token, map[string]any{
		"subject": obj("user", "alice"), "permission": "view", "resource": obj("resource", "doc-1"),
	}).Status
}

// TestMachineAppsAreServiceAccounts: a machine app calls the check and
// relationship APIs with its own token once a role that carries
// manage_apps is assigned to it, and stops when the role is taken away,
// the app is disabled or deleted. Its token opens nothing else, and only
// one who holds manage_apps can give it that role.
func TestMachineAppsAreServiceAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	admin := e.adminLogin("acme", "boss@acme.test").AccessToken
	appID, cc := e.machineApp("acme", admin, "worker")
	token := e.appToken(cc)

	if got := e.checkStatus("acme", token); got != 403 {
		t.Fatalf("an app without a role: %d; want 403", got)
	}
	checker := e.Role("acme", admin, "checker", "manage_apps")
	e.Assign(204, "acme", admin, checker, "app", appID)
	e.Must(200, "POST", "acme", "/v1/relationships", token, map[string]any{"touch": []any{
		map[string]any{"resource": obj("resource", "doc-1"), "relation": "viewer", "subject": obj("user", "alice")},
	}})
	var r struct{ Allowed bool }
	e.Must(200, "POST", "acme", "/v1/permissions/check", token, map[string]any{
		"subject": obj("user", "alice"), "permission": "view", "resource": obj("resource", "doc-1"),
	}).JSON(t, &r)
	if !r.Allowed {
		t.Fatal("the app's relationship does not show in its check")
	}
	var assigned struct{ Assignments []struct{ Type, ID string } }
	e.Must(200, "GET", "acme", "/v1/admin/roles/"+checker+"/assignments", admin, nil).JSON(t, &assigned)
	if len(assigned.Assignments) != 1 || assigned.Assignments[0].Type != "app" || assigned.Assignments[0].ID != appID {
		t.Fatalf("assignments %+v", assigned.Assignments)
	}

	// The app's token is no user's: Gatehouse's own API refuses it, and so
	// does another tenant.
	for _, path := range []string{"/v1/me", "/v1/admin/users", "/v1/admin/apps"} {
		e.Must(401, "GET", "acme", path, token, nil)
	}
	if got := e.checkStatus("globex", token); got != 401 {
		t.Fatalf("the app's token at another tenant: %d; want 401", got)
	}

	// Only machine apps of the tenant take roles; only a holder of the
	// permissions a role carries gives it.
	var webApp struct{ ID string }
	e.Must(201, "POST", "acme", "/v1/admin/apps", admin, map[string]any{"name": "web", "kind": "web",
		"redirect_uris": []string{"https://web.example.com/cb"}}).JSON(t, &webApp)
	e.Assign(400, "acme", admin, checker, "app", webApp.ID)
	globexAdmin := e.adminLogin("globex", "boss@globex.test").AccessToken
	globexApp, _ := e.machineApp("globex", globexAdmin, "theirs")
	e.Assign(400, "acme", admin, checker, "app", globexApp)
	roles := e.Role("acme", admin, "roles", "manage_roles")
	deputy, deputyID := e.Member("acme", "deputy@acme.test")
	e.Assign(204, "acme", admin, roles, "user", deputyID)
	otherID, _ := e.machineApp("acme", admin, "third")
	e.Assign(403, "acme", deputy, checker, "app", otherID)

	// Taking the role away: the check API refuses within the grant's
	// memory (seconds).
	e.Must(204, "DELETE", "acme", "/v1/admin/roles/"+checker+"/assignments/app/"+appID, admin, nil)
	eventuallyTrue(t, "the check API refuses the app without its role", func() bool { return e.checkStatus("acme", token) == 403 })

	// Disabled: refused at once, whatever its roles.
	e.Assign(204, "acme", admin, checker, "app", appID)
	eventuallyTrue(t, "the check API admits the app with its role again", func() bool { return e.checkStatus("acme", token) == 200 })
	e.Must(200, "PATCH", "acme", "/v1/admin/apps/"+appID, admin, map[string]any{"disabled": true})
	if got := e.checkStatus("acme", token); got != 401 {
		t.Fatalf("a disabled app: %d; want 401", got)
	}
	// Deleted: its assignments go with it.
	e.Must(204, "DELETE", "acme", "/v1/admin/apps/"+appID, admin, nil)
	e.Must(200, "GET", "acme", "/v1/admin/roles/"+checker+"/assignments", admin, nil).JSON(t, &assigned)
	if len(assigned.Assignments) != 0 {
		t.Fatalf("a deleted app keeps its assignments: %+v", assigned.Assignments)
	}
}
