package identity

import (
	"encoding/json"
	"math"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// appRoutes registers the app registration API on the admin router: for
// holders of manage_apps (admins hold it), checked in the transaction of
// the work (Service.appTx).
func (h *HTTP) appRoutes(a AdminRouter) {
	a.Get("/apps", h.handleListApps)
	a.Post("/apps", h.handleCreateApp)
	a.Get("/apps/:id", h.handleGetApp)
	a.Patch("/apps/:id", h.handleUpdateApp)
	a.Delete("/apps/:id", h.handleDeleteApp)
	a.Post("/apps/:id/secret", h.handleRotateAppSecret)
}

// appsResponse lists a tenant's apps.
type appsResponse struct {
	Apps []*App `json:"apps"`
}

type createAppRequest struct {
	Name                    string          `json:"name"`
	Kind                    string          `json:"kind"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris"`
	GrantTypes              []string        `json:"grant_types"`
	Scopes                  []string        `json:"scopes"`
	AccessTokenTTLSeconds   int64           `json:"access_token_ttl_seconds"`
	FirstParty              bool            `json:"first_party"`
	IDTokenAlg              string          `json:"id_token_signed_response_alg"`
	JWKS                    json.RawMessage `json:"jwks"`
	Disabled                bool            `json:"disabled"`
}

// updateAppRequest is a PATCH: absent fields stay as they are. Kind,
// client id and authentication method are here only to be refused by
// name.
type updateAppRequest struct {
	Name                    *string         `json:"name"`
	RedirectURIs            *[]string       `json:"redirect_uris"`
	PostLogoutRedirectURIs  *[]string       `json:"post_logout_redirect_uris"`
	GrantTypes              *[]string       `json:"grant_types"`
	Scopes                  *[]string       `json:"scopes"`
	AccessTokenTTLSeconds   *int64          `json:"access_token_ttl_seconds"`
	FirstParty              *bool           `json:"first_party"`
	IDTokenAlg              *string         `json:"id_token_signed_response_alg"`
	JWKS                    json.RawMessage `json:"jwks"`
	Disabled                *bool           `json:"disabled"`
	Kind                    *string         `json:"kind"`
	ClientID                *string         `json:"client_id"`
	TokenEndpointAuthMethod *string         `json:"token_endpoint_auth_method"`
}

type rotateSecretRequest struct {
	OverlapSeconds *int64 `json:"overlap_seconds"`
}

// secondsIn turns a count of seconds from a request into a duration the
// service judges; counts too big for one stay too big.
func secondsIn(n int64) time.Duration {
	return time.Duration(min(max(n, -1), math.MaxInt64/int64(time.Second))) * time.Second
}

func (h *HTTP) handleListApps(c *fiber.Ctx) error {
	apps, err := h.svc.ListApps(c.UserContext(), tenancy.Of(c), PrincipalOf(c), MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(appsResponse{Apps: apps})
}

func (h *HTTP) handleCreateApp(c *fiber.Ctx) error {
	var req createAppRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"name": req.Name, "kind": req.Kind}); err != nil {
		return err
	}
	a, err := h.svc.CreateApp(c.UserContext(), tenancy.Of(c), PrincipalOf(c), AppInput{
		Name: req.Name, Kind: req.Kind, TokenEndpointAuthMethod: req.TokenEndpointAuthMethod,
		RedirectURIs: req.RedirectURIs, PostLogoutRedirectURIs: req.PostLogoutRedirectURIs,
		GrantTypes: req.GrantTypes, Scopes: req.Scopes, AccessTokenTTL: secondsIn(req.AccessTokenTTLSeconds),
		FirstParty: req.FirstParty, IDTokenAlg: req.IDTokenAlg, JWKS: req.JWKS, Disabled: req.Disabled,
	}, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c) // the secret, once
	return c.Status(fiber.StatusCreated).JSON(a)
}

func (h *HTTP) handleGetApp(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such app")
	if err != nil {
		return err
	}
	a, err := h.svc.GetApp(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(a)
}

func (h *HTTP) handleUpdateApp(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such app")
	if err != nil {
		return err
	}
	var req updateAppRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	switch {
	case req.Kind != nil:
		return problem.InvalidField("kind", "cannot change: register a new app of the other kind")
	case req.ClientID != nil:
		return problem.InvalidField("client_id", "cannot change: Gatehouse chose it")
	case req.TokenEndpointAuthMethod != nil:
		return problem.InvalidField("token_endpoint_auth_method", "cannot change: register a new app")
	}
	ch := AppChange{
		Name: req.Name, RedirectURIs: req.RedirectURIs, PostLogoutRedirectURIs: req.PostLogoutRedirectURIs,
		GrantTypes: req.GrantTypes, Scopes: req.Scopes, FirstParty: req.FirstParty, IDTokenAlg: req.IDTokenAlg,
		JWKS: req.JWKS, Disabled: req.Disabled,
	}
	if req.AccessTokenTTLSeconds != nil {
		ttl := secondsIn(*req.AccessTokenTTLSeconds)
		ch.AccessTokenTTL = &ttl
	}
	a, err := h.svc.UpdateApp(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, ch, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(a)
}

func (h *HTTP) handleDeleteApp(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such app")
	if err != nil {
		return err
	}
	if err := h.svc.DeleteApp(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleRotateAppSecret(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such app")
	if err != nil {
		return err
	}
	overlap := DefaultSecretOverlap
	if len(c.Body()) > 0 { // the body is optional
		var req rotateSecretRequest
		if err := httpapi.DecodeJSON(c, &req); err != nil {
			return err
		}
		if req.OverlapSeconds != nil {
			overlap = secondsIn(*req.OverlapSeconds)
		}
	}
	r, err := h.svc.RotateAppSecret(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, overlap, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(r)
}
