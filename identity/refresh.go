package identity

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// errBadRefresh answers every refused refresh alike.
var errBadRefresh = problem.Errorf(problem.Unauthorized, "invalid or expired refresh token; sign in again")

// Refresh exchanges a refresh token for a new access token and a new
// refresh token of the same family (rotation). The presented token is
// spent: presenting it again is reuse, which ends the whole family (its
// session) and is audited, because only a copy of a stolen token is ever
// presented twice. Of two concurrent refreshes with one token exactly one
// wins. Returns Unauthorized for an unknown, spent, idle-expired or
// revoked token, a family past its absolute lifetime, or one of an app's
// (those are refreshed at the app's token endpoint).
func (s *Service) Refresh(ctx context.Context, t *tenancy.Tenant, token string, meta Meta) (*Tokens, error) {
	// The signing key is at hand before the rotation commits: after it,
	// nothing can fail that would lose the new token on its way out.
	sg, err := s.keys.signer(ctx, t)
	if err != nil {
		return nil, err
	}
	user, sess, next, err := s.rotate(ctx, t, token, nil, meta)
	if err != nil {
		return nil, err
	}
	return s.tokensSignedBy(sg, t, user, sess, next)
}

// rotate spends a refresh token of app client's families (nil: of
// Gatehouse's own sign-ins) and issues the family's next one: Refresh's
// rules. Returns the family's user and session and the new token.
func (s *Service) rotate(ctx context.Context, t *tenancy.Tenant, token string, client *string, meta Meta) (uuid.UUID, uuid.UUID, string, error) {
	if token == "" || len(token) > 128 {
		return uuid.Nil, uuid.Nil, "", errBadRefresh
	}
	hash := hashToken(token)
	var user, sess uuid.UUID
	var next string
	reused := false
	err := s.db.Tx(ctx, t, func(q *queries.Queries) error {
		var nextHash []byte
		next, nextHash = newRefreshToken()
		row, err := q.RotateRefreshToken(ctx, queries.RotateRefreshTokenParams{
			TenantID: t.ID.UUID(), TokenHash: hash, NextHash: nextHash, IdleSeconds: int32(s.cfg.RefreshIdle / time.Second), ClientID: client,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			spent, err := q.GetRefreshToken(ctx, queries.GetRefreshTokenParams{TenantID: t.ID.UUID(), TokenHash: hash})
			if errors.Is(err, pgx.ErrNoRows) {
				return errBadRefresh
			}
			if err != nil {
				return err
			}
			reused = true
			return s.endFamily(ctx, q, t, spent.SessionID, "refresh token reuse", meta)
		}
		if err != nil {
			return err
		}
		if row.UserID == uuid.Nil {
			return errBadRefresh // the family is over, or another app's; nothing is written
		}
		user, sess = row.UserID, row.SessionID
		details := map[string]string(nil)
		if client != nil {
			details = map[string]string{"app": *client}
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: user, Action: "token.refresh", Target: "session:" + sess.String(), Outcome: Success, Details: details, Meta: meta,
		})
	})
	if reused && err == nil {
		// The family is ended and that is committed; the caller learns
		// only that the token is no good.
		return uuid.Nil, uuid.Nil, "", errBadRefresh
	}
	if err != nil {
		if problem.CodeOf(err) == problem.Unauthorized {
			return uuid.Nil, uuid.Nil, "", err
		}
		return uuid.Nil, uuid.Nil, "", fmt.Errorf("refresh: %w", err)
	}
	return user, sess, next, nil
}

// endFamily revokes a session and its refresh-token family and audits why.
func (s *Service) endFamily(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, session uuid.UUID, reason string, meta Meta) error {
	sess, err := q.GetSession(ctx, queries.GetSessionParams{TenantID: t.ID.UUID(), ID: session})
	if err != nil {
		return err
	}
	if _, err := q.RevokeSessionByID(ctx, queries.RevokeSessionByIDParams{TenantID: t.ID.UUID(), ID: session, RevokedReason: &reason}); err != nil {
		return err
	}
	return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
		Actor: sess.UserID, Action: "session.revoke", Target: "session:" + session.String(), Outcome: Denied,
		Details: map[string]string{"reason": reason}, Meta: meta,
	})
}

// Revoke ends the session a refresh token belongs to (RFC 7009: holding
// the token is authority enough, and an unknown token is not an error, so
// the answer tells nothing).
func (s *Service) Revoke(ctx context.Context, t *tenancy.Tenant, token string, meta Meta) error {
	if token == "" || len(token) > 128 {
		return nil
	}
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		rt, err := q.GetRefreshToken(ctx, queries.GetRefreshTokenParams{TenantID: t.ID.UUID(), TokenHash: hashToken(token)})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		sess, err := q.GetSession(ctx, queries.GetSessionParams{TenantID: t.ID.UUID(), ID: rt.SessionID})
		// An app's family is revoked at the app's revocation endpoint.
		if err != nil || sess.RevokedAt != nil || sess.ClientID != nil {
			return err
		}
		reason := "token revoked"
		if _, err := q.RevokeSessionByID(ctx, queries.RevokeSessionByIDParams{TenantID: t.ID.UUID(), ID: sess.ID, RevokedReason: &reason}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: sess.UserID, Action: "session.revoke", Target: "session:" + sess.ID.String(), Outcome: Success,
			Details: map[string]string{"reason": reason}, Meta: meta,
		})
	})
}

// Session is a sign-in as its owner sees it.
type Session struct {
	ID         uuid.UUID   `json:"id"`
	Current    bool        `json:"current"`
	CreatedAt  time.Time   `json:"created_at"`
	LastSeenAt time.Time   `json:"last_seen_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	IP         *netip.Addr `json:"ip,omitempty"`
	UserAgent  string      `json:"user_agent,omitempty"`
}

// Sessions lists the signed-in user's active sessions, most recently used
// first. Returns Unauthorized if the caller's session ended.
func (s *Service) Sessions(ctx context.Context, t *tenancy.Tenant, p *Principal) ([]Session, error) {
	var rows []queries.AppSession
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		if _, err = s.liveSession(ctx, q, t, p); err != nil {
			return err
		}
		rows, err = q.ListUserSessions(ctx, queries.ListUserSessionsParams{TenantID: t.ID.UUID(), UserID: p.User})
		return err
	})
	if err != nil {
		return nil, err
	}
	return sessionsFromRows(rows, p.Session), nil
}

// EndSession ends one of the signed-in user's sessions. Returns NotFound if
// the user has no such active session (another user's sessions are not
// found either), Unauthorized if the caller's own session ended.
func (s *Service) EndSession(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) error {
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if _, err := s.liveSession(ctx, q, t, p); err != nil {
			return err
		}
		reason := "ended by the user"
		n, err := q.RevokeSession(ctx, queries.RevokeSessionParams{TenantID: t.ID.UUID(), ID: id, UserID: p.User, RevokedReason: &reason})
		if err != nil {
			return err
		}
		if n == 0 {
			return problem.Errorf(problem.NotFound, "no such session")
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "session.revoke", Target: "session:" + id.String(), Outcome: Success,
			Details: map[string]string{"reason": reason}, Meta: meta,
		})
	})
}
