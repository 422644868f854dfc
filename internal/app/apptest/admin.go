package apptest

import (
	"context"

	"github.com/gatehouse/gatehouse/identity"
)

// Accounts, roles and groups through the tenant API, as tests of its
// rights set them up.

// Password is the password the helpers below give the accounts they make.
const Password = "violet-Harbor-93-lantern"

// SignUp creates an account on tenant host.
func (c *Client) SignUp(host, email, password string) {
	c.t.Helper()
	c.Must(202, "POST", host, "/v1/auth/signup", "", map[string]string{"email": email, "password": password})
}

// Login signs an account in and returns its tokens.
func (c *Client) Login(host, email, password string) identity.Tokens {
	c.t.Helper()
	var tok identity.Tokens
	c.Must(200, "POST", host, "/v1/auth/login", "", map[string]string{"email": email, "password": password}).JSON(c.t, &tok)
	return tok
}

// Me returns the signed-in user.
func (c *Client) Me(host, token string) identity.User {
	c.t.Helper()
	var u identity.User
	c.Must(200, "GET", host, "/v1/me", token, nil).JSON(c.t, &u)
	return u
}

// Confirm marks the address of an account as confirmed, as opening its
// confirmation mail does (the mail flow has tests of its own).
func (c *Client) Confirm(email string) {
	c.t.Helper()
	tag, err := c.env.Admin.Exec(context.Background(), "update app.users set email_verified_at = now() where email = $1", email)
	if err != nil || tag.RowsAffected() == 0 {
		c.t.Fatalf("confirm %s: %v (%d accounts)", email, err, tag.RowsAffected())
	}
}

// Member signs up a confirmed account with Password and returns its
// token and id.
func (c *Client) Member(host, email string) (token, id string) {
	c.t.Helper()
	c.SignUp(host, email, Password)
	c.Confirm(email)
	token = c.Login(host, email, Password).AccessToken
	return token, c.Me(host, token).ID.String()
}

// AdminLogin signs up a confirmed account, makes it the tenant's admin (an
// operator's grant) and signs it in.
func (c *Client) AdminLogin(host, email string) identity.Tokens {
	c.t.Helper()
	c.SignUp(host, email, Password)
	c.Confirm(email)
	tn, err := c.env.Registry.Get(context.Background(), host)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.env.Accounts.SetRole(context.Background(), tn, email, identity.RoleAdmin); err != nil {
		c.t.Fatal(err)
	}
	return c.Login(host, email, Password)
}

// Role creates a custom role as token and returns its id.
func (c *Client) Role(host, token, name string, perms ...string) string {
	c.t.Helper()
	var r struct{ ID string }
	c.Must(201, "POST", host, "/v1/admin/roles", token, map[string]any{"name": name, "permissions": perms}).JSON(c.t, &r)
	return r.ID
}

// Group creates a group as token and returns its id.
func (c *Client) Group(host, token, name string) string {
	c.t.Helper()
	var g struct{ ID string }
	c.Must(201, "POST", host, "/v1/admin/groups", token, map[string]string{"name": name}).JSON(c.t, &g)
	return g.ID
}

// Assign assigns role to subject (typ, id) as token, which must answer
// status.
func (c *Client) Assign(status int, host, token, role, typ, id string) {
	c.t.Helper()
	r := c.Do("POST", host, "/v1/admin/roles/"+role+"/assignments", token, map[string]string{"type": typ, "id": id})
	if r.Status != status {
		c.t.Fatalf("assign role %s to %s %s: %d %s; want %d", role, typ, id, r.Status, r.Body, status)
	}
}

// AddMember adds subject (typ, id) to group as token, which must answer
// status.
func (c *Client) AddMember(status int, host, token, group, typ, id string, manager bool) {
	c.t.Helper()
	r := c.Do("POST", host, "/v1/admin/groups/"+group+"/members", token, map[string]any{"type": typ, "id": id, "manager": manager})
	if r.Status != status {
		c.t.Fatalf("add %s %s to group %s: %d %s; want %d", typ, id, group, r.Status, r.Body, status)
	}
}
