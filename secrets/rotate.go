package secrets

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// SealedColumns lists the columns of schema app that hold sealed values:
// by convention, bytea columns whose name ends in _sealed. Rotation finds
// them here, so a new sealed column is covered without touching this code;
// that is also why the statements below are built from the catalog rather
// than written in sqlc.
func SealedColumns(ctx context.Context, db queries.DBTX) ([]Column, error) {
	rows, err := db.Query(ctx, `
		select table_name::text, column_name::text from information_schema.columns
		where table_schema = 'app' and data_type = 'bytea' and column_name like '%\_sealed'
		order by table_name, column_name`)
	if err != nil {
		return nil, fmt.Errorf("list sealed columns: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Column, error) {
		var c Column
		return c, r.Scan(&c.Table, &c.Name)
	})
}

// Column is a sealed column of schema app.
type Column struct{ Table, Name string }

func (c Column) String() string { return "app." + c.Table + "." + c.Name }

// Progress reports a rotation's advance.
type Progress struct {
	Tenant    tenancy.ID
	Phase     string // "rotated", "rewrap", "waiting", "final pass", "done"
	Column    Column
	Rewrapped int // values re-wrapped so far, over all columns
	Remaining int // values of the current column still to re-wrap
}

// Rotator rotates tenants' Transit keys and re-wraps their stored data keys.
type Rotator struct {
	v     *Vault
	db    *tenancy.DB
	gens  Generations
	batch int
	// settle is how long a data key issued before the rotation may still
	// seal new values on some instance: the Sealer's SealKeyTTL.
	settle time.Duration
	now    func() time.Time
	sleep  func(context.Context, time.Duration) error
}

// NewRotator returns a Rotator working on tenant data through db (as
// gatehouse_app, tenant-scoped). settle must be at least the SealKeyTTL of
// every running server.
func NewRotator(v *Vault, db *tenancy.DB, gens Generations, settle time.Duration) *Rotator {
	return &Rotator{v: v, db: db, gens: gens, batch: 500, settle: settle, now: time.Now, sleep: sleepCtx}
}

// Rotate rotates tenant t's current Transit key and re-wraps every data key
// stored in t's sealed columns under the new version, in batches, without
// decrypting any data. Values sealed under an older key generation (before
// the tenant brought its own key) move to the current generation, and the
// retired generation's key is then destroyed. Finally it raises the key's
// min_decryption_version, so the old versions decrypt nothing any more.
//
// Rotate is resumable: a rotation that was interrupted (the key's
// min_decryption_version is still below its latest version) is finished
// instead of starting another one. Returns Unavailable if Vault or the
// database is down.
func (r *Rotator) Rotate(ctx context.Context, t *tenancy.Tenant, progress func(Progress)) error {
	if progress == nil {
		progress = func(Progress) {}
	}
	gen, err := r.gens.KeyGeneration(ctx, t.ID)
	if err != nil {
		return err
	}
	name := KeyName(t.ID, gen)
	info, err := r.v.keyInfo(ctx, name)
	if err != nil {
		return err
	}
	if info.MinDecryption >= info.Latest {
		if _, err := r.v.c.Logical().WriteWithContext(ctx, r.v.transit+"/keys/"+name+"/rotate", nil); err != nil {
			return r.v.fail("rotate "+name, err)
		}
		if info, err = r.v.keyInfo(ctx, name); err != nil {
			return err
		}
	}
	progress(Progress{Tenant: t.ID, Phase: "rotated"})
	// Vault records a version's creation in whole seconds.
	created, err := r.v.versionCreated(ctx, name, info.Latest)
	if err != nil {
		return err
	}
	return r.finish(ctx, t, gen, info.Latest, created.Add(time.Second), progress)
}

// finish re-wraps t's stored data keys to (gen, version), the key in use
// since the given time, and then retires everything older.
func (r *Rotator) finish(ctx context.Context, t *tenancy.Tenant, gen uint16, version int, since time.Time, progress func(Progress)) error {
	name := KeyName(t.ID, gen)
	done := 0
	if err := r.rewrapAll(ctx, t, gen, version, "rewrap", &done, progress); err != nil {
		return err
	}
	// Until every instance's cached data key from before the change has
	// expired, values sealed under the old key may still appear: wait that
	// long, then sweep again until a count finds nothing older.
	if wait := since.Add(r.settle + JanitorTick).Sub(r.now()); wait > 0 {
		progress(Progress{Tenant: t.ID, Phase: "waiting"})
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		if err := r.rewrapAll(ctx, t, gen, version, "final pass", &done, progress); err != nil {
			return err
		}
		left, err := r.countAllOlder(ctx, t, Stamp(gen, version))
		if err != nil {
			return err
		}
		if left == 0 {
			break
		}
		if attempt == 5 {
			return problem.Errorf(problem.Conflict, "values sealed under the old key keep arriving (%d): "+
				"a server keeps data keys longer than --settle; nothing was retired, run again with a longer --settle", left)
		}
		if err := r.sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	// Only now is nothing left that the old versions or generations
	// protect: retiring them is safe.
	if _, err := r.v.c.Logical().WriteWithContext(ctx, r.v.transit+"/keys/"+name+"/config",
		map[string]any{"min_decryption_version": version}); err != nil {
		return r.v.fail("retire old versions of "+name, err)
	}
	keys, err := r.v.tenantKeys(ctx, t.ID)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k != name {
			if err := r.v.deleteKey(ctx, k); err != nil {
				return err
			}
		}
	}
	progress(Progress{Tenant: t.ID, Phase: "done", Rewrapped: done})
	return nil
}

// countAllOlder counts t's values, over every sealed column, older than
// stamp.
func (r *Rotator) countAllOlder(ctx context.Context, t *tenancy.Tenant, stamp []byte) (int, error) {
	cols, err := r.columns(ctx, t)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, col := range cols {
		n, err := r.countOlder(ctx, t, col, stamp)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func (r *Rotator) columns(ctx context.Context, t *tenancy.Tenant) ([]Column, error) {
	var cols []Column
	err := r.db.RawTx(ctx, t, func(tx queries.DBTX) error {
		var err error
		cols, err = SealedColumns(ctx, tx)
		return err
	})
	return cols, err
}

// rewrapAll re-wraps every value of t older than (gen, version), column by
// column, batch by batch.
func (r *Rotator) rewrapAll(ctx context.Context, t *tenancy.Tenant, gen uint16, version int, phase string, done *int, progress func(Progress)) error {
	cols, err := r.columns(ctx, t)
	if err != nil {
		return err
	}
	stamp := Stamp(gen, version)
	for _, col := range cols {
		remaining, err := r.countOlder(ctx, t, col, stamp)
		if err != nil {
			return fmt.Errorf("rewrap %s: %w", col, err)
		}
		for {
			n, err := r.rewrapBatch(ctx, t, col, gen, version, stamp)
			if err != nil {
				return fmt.Errorf("rewrap %s: %w", col, err)
			}
			*done += n
			remaining = max(remaining-n, 0)
			if n == 0 {
				remaining = 0
			}
			progress(Progress{Tenant: t.ID, Phase: phase, Column: col, Rewrapped: *done, Remaining: remaining})
			if n == 0 {
				break
			}
		}
	}
	return nil
}

// olderThan is the condition selecting col's values sealed under a key
// older than stamp ($2): the stamp's bytes sort like (generation, version).
func olderThan(col Column) (table, column, cond string) {
	table = pgx.Identifier{"app", col.Table}.Sanitize()
	column = pgx.Identifier{col.Name}.Sanitize()
	return table, column, column + " is not null and substring(" + column + " from 2 for 6) < $2"
}

// countOlder counts t's values of col older than stamp.
func (r *Rotator) countOlder(ctx context.Context, t *tenancy.Tenant, col Column, stamp []byte) (int, error) {
	table, _, older := olderThan(col)
	var n int
	err := r.db.RawTx(ctx, t, func(tx queries.DBTX) error {
		return tx.QueryRow(ctx, "select count(*) from "+table+" where tenant_id = $1 and "+older, t.ID.UUID(), stamp).Scan(&n)
	})
	return n, err
}

// rewrapBatch re-wraps up to one batch of col's values older than stamp in
// one tenant transaction, and returns how many it did (0: none are left).
func (r *Rotator) rewrapBatch(ctx context.Context, t *tenancy.Tenant, col Column, gen uint16, version int, stamp []byte) (int, error) {
	table, column, older := olderThan(col)
	var done int
	err := r.db.RawTx(ctx, t, func(tx queries.DBTX) error {
		rows, err := tx.Query(ctx, "select ctid::text, "+column+" from "+table+
			" where tenant_id = $1 and "+older+" limit $3 for update", t.ID.UUID(), stamp, r.batch)
		if err != nil {
			return err
		}
		type item struct {
			ctid string
			bl   blob
		}
		var items []item
		for rows.Next() {
			var ctid string
			var raw []byte
			if err := rows.Scan(&ctid, &raw); err != nil {
				rows.Close()
				return err
			}
			bl, err := parseBlob(raw)
			if err != nil {
				rows.Close()
				return fmt.Errorf("row %s: %w", ctid, err)
			}
			items = append(items, item{ctid, bl})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		blobs := make([]*blob, len(items))
		for i := range items {
			blobs[i] = &items[i].bl
		}
		if err := r.v.rewrapTo(ctx, t.ID, gen, version, blobs); err != nil {
			return err
		}
		for _, it := range items {
			if _, err := tx.Exec(ctx, "update "+table+" set "+column+" = $2 where ctid = $1::text::tid",
				it.ctid, it.bl.bytes()); err != nil {
				return err
			}
		}
		done = len(items)
		return nil
	})
	return done, err
}

// rewrapTo moves the wrapped data keys of blobs to key generation gen at
// version: Transit rewrap for blobs of the same generation (no data key
// leaves Vault), decrypt under the old generation's key and encrypt under
// the new one for older generations.
func (v *Vault) rewrapTo(ctx context.Context, t tenancy.ID, gen uint16, version int, blobs []*blob) error {
	byGen := map[uint16][]*blob{}
	for _, b := range blobs {
		byGen[b.gen] = append(byGen[b.gen], b)
	}
	target := KeyName(t, gen)
	for g, bs := range byGen {
		var wrapped []string
		var err error
		if g == gen {
			wrapped, err = v.batch(ctx, "rewrap", target, bs, func(b *blob) map[string]any {
				return map[string]any{"ciphertext": string(b.wrapped), "key_version": version}
			}, "ciphertext")
		} else {
			// The data keys pass through memory here (as base64 strings Go
			// cannot wipe): moving between two keys has no Transit call
			// that avoids it. The data itself stays untouched.
			var plain []string
			plain, err = v.batch(ctx, "decrypt", KeyName(t, g), bs, func(b *blob) map[string]any {
				return map[string]any{"ciphertext": string(b.wrapped)}
			}, "plaintext")
			if err == nil {
				i := 0
				wrapped, err = v.batch(ctx, "encrypt", target, bs, func(*blob) map[string]any {
					p := plain[i]
					i++
					return map[string]any{"plaintext": p, "key_version": version}
				}, "ciphertext")
			}
		}
		if err != nil {
			return err
		}
		for i, b := range bs {
			b.gen, b.version, b.wrapped = gen, version, []byte(wrapped[i])
		}
	}
	return nil
}

// batch runs one Transit batch operation (rewrap, decrypt, encrypt) on key
// name and returns field of each result, in order.
func (v *Vault) batch(ctx context.Context, op, name string, bs []*blob, input func(*blob) map[string]any, field string) ([]string, error) {
	in := make([]map[string]any, len(bs))
	for i, b := range bs {
		in[i] = input(b)
	}
	// With 200 for partial failures Vault reports each item's error
	// instead of failing the whole batch without saying which item.
	body := map[string]any{"batch_input": in, "partial_failure_response_code": 200}
	s, err := v.c.Logical().WriteWithContext(ctx, v.transit+"/"+op+"/"+name, body)
	if err != nil {
		return nil, v.fail(op+" under "+name, err)
	}
	if s == nil {
		return nil, fmt.Errorf("%s under %s: empty answer", op, name)
	}
	results, _ := s.Data["batch_results"].([]any)
	if len(results) != len(bs) {
		return nil, fmt.Errorf("%s under %s: %d results for %d inputs", op, name, len(results), len(bs))
	}
	out := make([]string, len(bs))
	for i, res := range results {
		m, _ := res.(map[string]any)
		if e, _ := m["error"].(string); e != "" {
			return nil, fmt.Errorf("%s under %s: item %d: %s", op, name, i, e)
		}
		out[i], _ = m[field].(string)
		if out[i] == "" {
			return nil, fmt.Errorf("%s under %s: item %d has no %s", op, name, i, field)
		}
	}
	return out, nil
}

// versionCreated returns when version of key name was made.
func (v *Vault) versionCreated(ctx context.Context, name string, version int) (time.Time, error) {
	s, err := v.c.Logical().ReadWithContext(ctx, v.transit+"/keys/"+name)
	if err != nil {
		return time.Time{}, v.fail("read key "+name, err)
	}
	if s == nil {
		return time.Time{}, problem.Errorf(problem.NotFound, "key %s does not exist", name)
	}
	keys, _ := s.Data["keys"].(map[string]any)
	switch at := keys[strconv.Itoa(version)].(type) {
	case json.Number: // symmetric keys: unix seconds
		n, err := at.Int64()
		return time.Unix(n, 0), err
	case string:
		return time.Parse(time.RFC3339Nano, at)
	}
	return time.Time{}, fmt.Errorf("key %s has no version %d", name, version)
}

// deleteKey lifts a key's deletion guard and deletes it.
func (v *Vault) deleteKey(ctx context.Context, name string) error {
	if _, err := v.c.Logical().WriteWithContext(ctx, v.transit+"/keys/"+name+"/config",
		map[string]any{"deletion_allowed": true}); err != nil {
		return v.fail("allow deleting "+name, err)
	}
	if _, err := v.c.Logical().DeleteWithContext(ctx, v.transit+"/keys/"+name); err != nil {
		return v.fail("delete "+name, err)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
