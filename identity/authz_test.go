package identity_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

// me returns the signed-in user.
func (e *env) me(slug, token string) identity.User {
	e.t.Helper()
	var u identity.User
	e.must(200, "GET", slug, "/v1/me", token, nil).json(e.t, &u)
	return u
}

func TestUserManagersCannotMakeAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@escalate.test")
	e.signup("acme", "hr@escalate.test", goodPassword)
	e.confirmed("hr@escalate.test")
	hr := e.login("acme", "hr@escalate.test", goodPassword)
	hrID := e.me("acme", hr.AccessToken).ID.String()
	var role struct{ ID string }
	e.must(201, "POST", "acme", "/v1/admin/roles", boss.AccessToken, map[string]any{"name": "hr", "permissions": []string{"manage_users"}}).json(t, &role)
	e.must(204, "POST", "acme", "/v1/admin/roles/"+role.ID+"/assignments", boss.AccessToken, map[string]string{"type": "user", "id": hrID})

	e.must(200, "GET", "acme", "/v1/admin/users", hr.AccessToken, nil)
	e.problemOf(e.do("PATCH", "acme", "/v1/admin/users/"+hrID, hr.AccessToken, map[string]string{"role": "admin"}), 403)
	e.problemOf(e.do("POST", "acme", "/v1/admin/users", hr.AccessToken, map[string]string{"email": "sock@escalate.test", "role": "admin"}), 403)
	e.problemOf(e.do("POST", "acme", "/v1/admin/roles", hr.AccessToken, map[string]any{"name": "mine", "permissions": []string{"manage_roles"}}), 403)
	// Demoting an admin takes their rights at once.
	e.must(200, "PATCH", "acme", "/v1/admin/users/"+hrID, boss.AccessToken, map[string]string{"role": "admin"})
	e.must(201, "POST", "acme", "/v1/admin/roles", hr.AccessToken, map[string]any{"name": "now-allowed"})
}
