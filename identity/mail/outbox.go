package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Sealer envelope-encrypts per-row secrets (secrets.Sealer).
type Sealer interface {
	Seal(ctx context.Context, t tenancy.ID, aad, plain []byte) ([]byte, error)
	Open(ctx context.Context, t tenancy.ID, aad, sealed []byte) ([]byte, error)
}

// AAD builds associated data binding a sealed value to its table, column
// and row (secrets.AAD).
type AAD func(table, column, row string) []byte

// Outbox writes mails into tenants' outboxes. A mail is sealed before the
// transaction that writes it, so that the transaction holds no Vault
// round trip.
type Outbox struct {
	sealer Sealer
	aad    AAD
	relay  *Relay // set by NewRelay: woken after a commit
}

// NewOutbox returns an outbox sealing with sealer.
func NewOutbox(sealer Sealer, aad AAD) *Outbox {
	return &Outbox{sealer: sealer, aad: aad}
}

func (o *Outbox) rowAAD(t tenancy.ID, id uuid.UUID) []byte {
	return o.aad("mail_outbox", "payload_sealed", t.String()+"/"+id.String())
}

// Pending is a sealed mail, ready to be written in a transaction.
type Pending struct {
	tenant tenancy.ID
	id     uuid.UUID
	kind   string
	sealed []byte
}

// Prepare seals m, a mail of kind for tenant t.
func (o *Outbox) Prepare(ctx context.Context, t *tenancy.Tenant, kind string, m Message) (*Pending, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sealed, err := o.sealer.Seal(ctx, t.ID, o.rowAAD(t.ID, id), plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("seal mail: %w", err)
	}
	return &Pending{tenant: t.ID, id: id, kind: kind, sealed: sealed}, nil
}

// Write adds the mail, about the account user, to the outbox in q's
// transaction: it is sent if and only if that transaction commits, and
// deleted unsent if the account is deleted first.
func (p *Pending) Write(ctx context.Context, q *queries.Queries, user uuid.UUID) error {
	return q.EnqueueMail(ctx, queries.EnqueueMailParams{TenantID: p.tenant.UUID(), ID: p.id, Kind: p.kind, PayloadSealed: p.sealed, UserID: &user})
}

// ID returns the mail's outbox id.
func (p *Pending) ID() uuid.UUID { return p.id }

// Notify tells this process's relay, if it runs one, that tenant t has
// new mail: call it after the transaction that wrote the mail committed.
// Without it the mail still goes, at the relay's next sweep.
func (o *Outbox) Notify(t *tenancy.Tenant) {
	if o.relay != nil {
		o.relay.relay.Notify(t)
	}
}

// Sender delivers one mail (SMTP.Send).
type Sender interface {
	Send(ctx context.Context, id string, m Message) error
}

// RelayOptions tune a Relay; zero values take the defaults.
type RelayOptions struct {
	Sweep       time.Duration // how often every tenant's outbox is checked; default 15s
	Lease       time.Duration // how long a claimed batch is a relay's own; default 5m (a batch of 10 at 15s each fits)
	Backoff     time.Duration // first retry delay, doubled each attempt up to an hour; default 30s
	MaxAttempts int           // attempts before a mail is given up; default 10 (about 4 hours)
	Keep        time.Duration // how long sent and failed rows stay as a record; default 7 days
	Log         *slog.Logger
}

// Relay takes mails from every tenant's outbox to an SMTP server: at
// least once (a relay that dies between sending and recording sends the
// mail again, with the same Message-ID), retrying temporary failures with
// exponential backoff. Any number of server instances may each run one;
// claims are leased, so no two send the same mail at once. It is the
// mail outbox of an outbox.Relay.
type Relay struct {
	db     *tenancy.DB
	outbox *Outbox
	send   Sender
	o      RelayOptions
	relay  *outbox.Relay
}

// NewRelay returns a relay over the outboxes of the tenants that tenants
// lists, sending through send. It takes over outbox's notifications.
func NewRelay(db *tenancy.DB, tenants func(context.Context) ([]*tenancy.Tenant, error), box *Outbox, send Sender, o RelayOptions) *Relay {
	if o.Lease <= 0 {
		o.Lease = 5 * time.Minute
	}
	if o.Backoff <= 0 {
		o.Backoff = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.Keep <= 0 {
		o.Keep = 7 * 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{db: db, outbox: box, send: send, o: o}
	r.relay = outbox.New(db, tenants, r, outbox.Options{Name: "mail", Sweep: o.Sweep, Log: o.Log})
	box.relay = r
	return r
}

// Run relays until ctx ends: a tenant at once when notified, and every
// tenant with due mail at each sweep.
func (r *Relay) Run(ctx context.Context) { r.relay.Run(ctx) }

// Due is the mail outbox's probe: does the tenant have mail to send now?
func (r *Relay) Due() string { return queries.HasDueMailProbe }

// Drain sends tenant t's due mail, a batch at a time.
func (r *Relay) Drain(ctx context.Context, t *tenancy.Tenant) error {
	log := r.o.Log.With("tenant", t.Slug)
	for ctx.Err() == nil {
		var batch []queries.ClaimMailRow
		err := r.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
			batch, err = q.ClaimMail(ctx, queries.ClaimMailParams{TenantID: t.ID.UUID(), Lease: r.o.Lease.Seconds(), Lim: 10})
			return err
		})
		if err != nil {
			return fmt.Errorf("claim mail: %w", err)
		}
		if len(batch) == 0 {
			r.prune(ctx, t)
			return nil
		}
		for _, m := range batch {
			r.deliver(ctx, t, m, log)
		}
	}
	return nil
}

// deliver sends one claimed mail and records the outcome.
func (r *Relay) deliver(ctx context.Context, t *tenancy.Tenant, m queries.ClaimMailRow, log *slog.Logger) {
	log = log.With("mail", m.ID, "kind", m.Kind, "attempt", m.Attempts)
	err := r.sendOne(ctx, t, m)
	var perm *PermanentError
	switch {
	case err == nil:
		err = r.db.Tx(ctx, t, func(q *queries.Queries) error {
			return q.MarkMailSent(ctx, queries.MarkMailSentParams{TenantID: t.ID.UUID(), ID: m.ID})
		})
		if err != nil {
			// Sent but not recorded: the lease ends and it goes again.
			log.Warn("mail relay: sent, but cannot record it", "err", err)
			return
		}
		log.Debug("mail sent")
	case ctx.Err() != nil:
		return // shutting down; the lease ends and another run retries
	case problem.CodeOf(err) == problem.Unavailable:
		// Vault could not open the mail: not the SMTP server's failure,
		// and no attempt of the mail's.
		delay := r.backoff(1)
		msg := outbox.Truncate(err.Error(), 500)
		if err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
			return q.UnclaimMail(ctx, queries.UnclaimMailParams{TenantID: t.ID.UUID(), ID: m.ID, Delay: delay.Seconds(), LastError: &msg})
		}); err != nil {
			log.Warn("mail relay: cannot record failure", "err", err)
		}
	case errors.As(err, &perm) || int(m.Attempts) >= r.o.MaxAttempts:
		log.Warn("mail relay: giving up on mail", "err", err)
		msg := outbox.Truncate(err.Error(), 500)
		if err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
			return q.FailMail(ctx, queries.FailMailParams{TenantID: t.ID.UUID(), ID: m.ID, LastError: &msg})
		}); err != nil {
			log.Warn("mail relay: cannot record failure", "err", err)
		}
	default:
		delay := r.backoff(int(m.Attempts))
		log.Info("mail relay: will retry", "err", err, "in", delay)
		msg := outbox.Truncate(err.Error(), 500)
		if err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
			return q.RetryMail(ctx, queries.RetryMailParams{TenantID: t.ID.UUID(), ID: m.ID, Delay: delay.Seconds(), LastError: &msg})
		}); err != nil {
			log.Warn("mail relay: cannot record failure", "err", err)
		}
	}
}

func (r *Relay) sendOne(ctx context.Context, t *tenancy.Tenant, m queries.ClaimMailRow) error {
	plain, err := r.outbox.sealer.Open(ctx, t.ID, r.outbox.rowAAD(t.ID, m.ID), m.PayloadSealed)
	if err != nil {
		return fmt.Errorf("open mail: %w", err)
	}
	defer clear(plain)
	var msg Message
	if err := json.Unmarshal(plain, &msg); err != nil {
		return &PermanentError{fmt.Errorf("mail payload: %w", err)}
	}
	return r.send.Send(ctx, m.ID.String(), msg)
}

// backoff is the delay before attempt n+1: Backoff doubled n-1 times, at
// most an hour, with jitter.
func (r *Relay) backoff(n int) time.Duration { return outbox.Backoff(r.o.Backoff, n, time.Hour) }

func (r *Relay) prune(ctx context.Context, t *tenancy.Tenant) {
	err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
		_, err := q.PruneMail(ctx, queries.PruneMailParams{TenantID: t.ID.UUID(), DoneAt: ptr(time.Now().Add(-r.o.Keep))})
		return err
	})
	if err != nil {
		r.o.Log.Warn("mail relay: cannot prune the outbox", "tenant", t.Slug, "err", err)
	}
}

func ptr[T any](v T) *T { return &v }
