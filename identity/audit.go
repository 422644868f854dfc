package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Meta is what a request tells about its origin, for the audit trail and
// the session list.
type Meta struct {
	IP        netip.Addr
	UserAgent string
	RequestID string
}

// Event is one entry of a tenant's audit trail.
type Event struct {
	Actor   uuid.UUID // zero: no known actor (e.g. a login for an unknown email)
	Action  string    // e.g. login, signup, session.revoke
	Target  string
	Outcome string // success, failure, denied
	Details map[string]string
	Meta    Meta
}

// Audit outcomes.
const (
	Success = "success"
	Failure = "failure"
	Denied  = "denied"
)

// Audit appends e to tenant t's audit trail in q's transaction (see
// appendAudit), for other packages' admin actions.
func Audit(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, e Event) error {
	return appendAudit(ctx, q, t.ID.UUID(), time.Now(), e)
}

// appendAudit appends e to tenant's audit trail inside the caller's
// transaction, chained to the previous event by hash, in one round trip.
// It locks the tenant's chain head until commit, which orders concurrent
// writers: call it last in a transaction.
func appendAudit(ctx context.Context, q *queries.Queries, tenant uuid.UUID, at time.Time, e Event) error {
	at = at.UTC().Truncate(time.Microsecond) // what timestamptz keeps
	p := queries.AppendAuditEventParams{
		TenantID: tenant, At: at, Action: e.Action, Outcome: e.Outcome,
		Digest: auditRecord{At: at, Event: e}.digest(),
	}
	if e.Actor != uuid.Nil {
		p.ActorID = &e.Actor
	}
	if e.Target != "" {
		p.Target = &e.Target
	}
	if e.Meta.IP.IsValid() {
		p.Ip = &e.Meta.IP
	}
	if e.Meta.UserAgent != "" {
		ua := truncate(e.Meta.UserAgent, 512)
		p.UserAgent = &ua
	}
	if e.Meta.RequestID != "" {
		p.RequestID = &e.Meta.RequestID
	}
	if len(e.Details) > 0 {
		var err error
		if p.Details, err = json.Marshal(e.Details); err != nil {
			return err
		}
	}
	_, err := q.AppendAuditEvent(ctx, p)
	if errors.Is(err, pgx.ErrNoRows) {
		// The tenant's first event: start its chain, then append.
		if err := q.InitAuditHead(ctx, queries.InitAuditHeadParams{TenantID: tenant, Hash: genesis[:]}); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		_, err = q.AppendAuditEvent(ctx, p)
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// genesis is the "previous hash" of a tenant's first event.
var genesis = sha256.Sum256([]byte("gatehouse audit genesis"))

type auditRecord struct {
	Seq int64
	At  time.Time
	Event
}

// digest is SHA-256 over a canonical encoding of the event's content
// (length-prefixed fields, so no two events encode alike; details as JSON
// with sorted keys, which an event read back from Postgres reproduces).
func (r auditRecord) digest() []byte {
	h := sha256.New()
	field := func(s string) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(r.At.UTC().Format(time.RFC3339Nano))
	actor := ""
	if r.Actor != uuid.Nil {
		actor = r.Actor.String()
	}
	field(actor)
	field(r.Action)
	field(r.Target)
	field(r.Outcome)
	ip := ""
	if r.Meta.IP.IsValid() {
		ip = r.Meta.IP.String()
	}
	field(ip)
	field(truncate(r.Meta.UserAgent, 512))
	field(r.Meta.RequestID)
	details := ""
	if len(r.Details) > 0 {
		b, _ := json.Marshal(r.Details) // map keys are sorted
		details = string(b)
	}
	field(details)
	return h.Sum(nil)
}

// hash links the record to prev: SHA-256(prev || digest || seq as 8
// big-endian bytes), the same the database computes on append.
func (r auditRecord) hash(prev []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(r.digest())
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], uint64(r.Seq))
	h.Write(seq[:])
	return h.Sum(nil)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}

// AuditBreak says where a tenant's audit chain stops holding.
type AuditBreak struct {
	Seq    int64  // the first event that does not verify (0: the chain head)
	Reason string // what is wrong there
}

// VerifyAudit walks tenant t's whole audit trail in order and recomputes
// the hash chain. It returns nil if every event is intact, in sequence,
// and the chain ends where the head says; otherwise where it first breaks
// (an altered event, a deleted one, a gap, a truncated tail). Returns the
// number of events checked.
func VerifyAudit(ctx context.Context, db *tenancy.DB, t *tenancy.Tenant) (int64, *AuditBreak, error) {
	// The head first: the chain is checked up to where it stood then, so
	// events appended while this runs do not look like tampering.
	var head queries.GetAuditHeadRow
	err := db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		head, err = q.GetAuditHead(ctx, t.ID.UUID())
		return err
	})
	noHead := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !noHead {
		return 0, nil, fmt.Errorf("verify audit: %w", err)
	}
	prev := genesis[:]
	var seq int64
	var brk *AuditBreak
	err = eachAuditEvent(ctx, db, t, func(r queries.AppAuditEvent) bool {
		if !noHead && r.Seq > head.Seq {
			return false // appended after the head was read
		}
		switch rec, err := recordFromRow(r); {
		case r.Seq != seq+1:
			brk = &AuditBreak{Seq: seq + 1, Reason: fmt.Sprintf("event %d is missing", seq+1)}
		case !bytes.Equal(r.PrevHash, prev):
			brk = &AuditBreak{Seq: r.Seq, Reason: "it does not link to the event before it"}
		case err != nil:
			brk = &AuditBreak{Seq: r.Seq, Reason: err.Error()}
		case !bytes.Equal(rec.hash(prev), r.Hash):
			brk = &AuditBreak{Seq: r.Seq, Reason: "its content does not match its hash (altered)"}
		default:
			prev, seq = r.Hash, r.Seq
			return true
		}
		return false
	})
	switch {
	case err != nil || brk != nil:
		return seq, brk, err
	case noHead && seq > 0:
		return seq, &AuditBreak{Reason: "the chain head is missing"}, nil
	case noHead:
		return 0, nil, nil
	case head.Seq != seq || !bytes.Equal(head.Hash, prev):
		return seq, &AuditBreak{Seq: seq + 1, Reason: fmt.Sprintf("the chain ends at event %d but its head says %d (events deleted from the end?)", seq, head.Seq)}, nil
	}
	return seq, nil, nil
}

// recordFromRow rebuilds the hashed record of a stored event.
func recordFromRow(r queries.AppAuditEvent) (auditRecord, error) {
	e := Event{Action: r.Action, Outcome: r.Outcome}
	if r.ActorID != nil {
		e.Actor = *r.ActorID
	}
	if r.Target != nil {
		e.Target = *r.Target
	}
	if r.Ip != nil {
		e.Meta.IP = *r.Ip
	}
	if r.UserAgent != nil {
		e.Meta.UserAgent = *r.UserAgent
	}
	if r.RequestID != nil {
		e.Meta.RequestID = *r.RequestID
	}
	if len(r.Details) > 0 {
		if err := json.Unmarshal(r.Details, &e.Details); err != nil {
			return auditRecord{}, fmt.Errorf("its details are not a JSON object of strings")
		}
	}
	return auditRecord{Seq: r.Seq, At: r.At, Event: e}, nil
}

// AuditRecord is one audit event as exported (NDJSON, one a line).
type AuditRecord struct {
	Seq       int64             `json:"seq"`
	At        time.Time         `json:"at"`
	Actor     string            `json:"actor,omitempty"`
	Action    string            `json:"action"`
	Target    string            `json:"target,omitempty"`
	Outcome   string            `json:"outcome"`
	IP        string            `json:"ip,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	PrevHash  string            `json:"prev_hash"`
	Hash      string            `json:"hash"`
}

// ExportAudit writes tenant t's audit trail to w as NDJSON, oldest first,
// with each event's hashes so the chain can be checked outside Gatehouse.
// Returns how many events it wrote.
func ExportAudit(ctx context.Context, db *tenancy.DB, t *tenancy.Tenant, w io.Writer) (int64, error) {
	enc := json.NewEncoder(w)
	var n int64
	var failed error
	err := eachAuditEvent(ctx, db, t, func(r queries.AppAuditEvent) bool {
		out, err := exportRecord(r)
		if err != nil {
			failed = fmt.Errorf("export audit: %w", err)
			return false
		}
		if failed = enc.Encode(out); failed != nil {
			return false
		}
		n++
		return true
	})
	return n, errors.Join(err, failed)
}

// exportRecord turns a stored event into its exported form.
func exportRecord(r queries.AppAuditEvent) (AuditRecord, error) {
	rec, err := recordFromRow(r)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("event %d: %w", r.Seq, err)
	}
	out := AuditRecord{
		Seq: r.Seq, At: r.At.UTC(), Action: rec.Action, Target: rec.Target, Outcome: rec.Outcome,
		UserAgent: rec.Meta.UserAgent, RequestID: rec.Meta.RequestID, Details: rec.Details,
		PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash),
	}
	if rec.Actor != uuid.Nil {
		out.Actor = rec.Actor.String()
	}
	if rec.Meta.IP.IsValid() {
		out.IP = rec.Meta.IP.String()
	}
	return out, nil
}

// eachAuditEvent calls fn with tenant t's audit events in order, a page of
// them per transaction, until fn returns false or the events run out.
func eachAuditEvent(ctx context.Context, db *tenancy.DB, t *tenancy.Tenant, fn func(queries.AppAuditEvent) bool) error {
	const page = 1000
	var after int64
	for {
		var rows []queries.AppAuditEvent
		err := db.Tx(ctx, t, func(q *queries.Queries) (err error) {
			rows, err = q.ListAuditEvents(ctx, queries.ListAuditEventsParams{TenantID: t.ID.UUID(), Seq: after, Limit: page})
			return err
		})
		if err != nil {
			return fmt.Errorf("read audit trail: %w", err)
		}
		for _, r := range rows {
			if !fn(r) {
				return nil
			}
			after = r.Seq
		}
		if len(rows) < page {
			return nil
		}
	}
}
