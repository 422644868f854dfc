package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

// operator is what the bench needs to create the tenants of the scale
// scenarios, thousands of them, in process and several at once: the
// primary database as an administrator and Vault, configured as for
// gatehouse's own commands (GATEHOUSE_DATABASE_URL, GATEHOUSE_VAULT_ADDR,
// GATEHOUSE_VAULT_TOKEN or GATEHOUSE_VAULT_TOKEN_FILE, and
// GATEHOUSE_APP_PASSWORD for silos). The server never sees it.
type operator struct {
	reg   *tenancy.Registry
	admin *pgxpool.Pool
	close func()
}

// operator connects the bench's setup, once.
func (b *bench) operator(ctx context.Context) (*operator, error) {
	if b.op != nil {
		return b.op, nil
	}
	dbURL := os.Getenv("GATEHOUSE_DATABASE_URL")
	if dbURL == "" {
		return nil, errors.New("creating tenants needs GATEHOUSE_DATABASE_URL and Vault's GATEHOUSE_VAULT_* (as for gatehouse tenant create)")
	}
	token := os.Getenv("GATEHOUSE_VAULT_TOKEN")
	if f := os.Getenv("GATEHOUSE_VAULT_TOKEN_FILE"); f != "" {
		t, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(t))
	}
	v, err := secrets.Connect(ctx, secrets.Config{Addr: os.Getenv("GATEHOUSE_VAULT_ADDR"), Token: token}, nil)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		v.Close()
		return nil, errors.New("GATEHOUSE_DATABASE_URL is malformed")
	}
	cfg.MaxConns = int32(b.setupParallel) + 2
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		v.Close()
		return nil, err
	}
	m := &tenancy.Migrator{Out: io.Discard, AppPassword: os.Getenv("GATEHOUSE_APP_PASSWORD")}
	b.op = &operator{
		reg:   tenancy.NewRegistry(admin, dbURL, b.baseDomain, v, m),
		admin: admin,
		close: func() { admin.Close(); v.Close() },
	}
	return b.op, nil
}

// benchSlug names the bench's i-th tenant of a kind (prefix): slugs of
// the same length that differ in their last characters, as a resolver's
// cache meets them.
func benchSlug(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// ensureTenants makes sure the tenants prefix-00001 … prefix-n exist, as
// placed, creating those missing --setup-parallel at once, and returns
// their slugs.
func (b *bench) ensureTenants(ctx context.Context, prefix string, n int, placement tenancy.Placement) ([]string, error) {
	op, err := b.operator(ctx)
	if err != nil {
		return nil, err
	}
	live, err := op.reg.List(ctx)
	if err != nil {
		return nil, err
	}
	exists := map[string]tenancy.Placement{}
	for _, t := range live {
		exists[t.Slug] = t.Placement
	}
	slugs := make([]string, n)
	var missing []string
	for i := range slugs {
		slugs[i] = benchSlug(prefix, i+1)
		p, ok := exists[slugs[i]]
		if !ok {
			missing = append(missing, slugs[i])
		} else if p != placement {
			return nil, fmt.Errorf("tenant %s exists, placed %s, not %s", slugs[i], p, placement)
		}
	}
	if len(missing) == 0 {
		return slugs, nil
	}
	start := time.Now()
	work := make(chan string)
	var created atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range b.setupParallel {
		wg.Go(func() {
			for slug := range work {
				_, err := op.reg.Create(ctx, tenancy.CreateParams{Slug: slug, Name: "Bench " + slug, Placement: placement})
				if err != nil && problem.CodeOf(err) != problem.Conflict {
					mu.Lock()
					errs = append(errs, fmt.Errorf("create %s: %w", slug, err))
					mu.Unlock()
					continue
				}
				if c := created.Add(1); c%1000 == 0 {
					fmt.Printf("  created %d of %d %s tenants (%.1fs)\n", c, len(missing), placement, time.Since(start).Seconds())
				}
			}
		})
	}
	for _, slug := range missing {
		work <- slug
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	took := time.Since(start)
	b.reportRows = append(b.reportRows, fmt.Sprintf("setup: created %d %s tenants in %.1fs (%.1f ms each, %d at once)",
		len(missing), placement, took.Seconds(), float64(took.Milliseconds())/float64(len(missing)), b.setupParallel))
	return slugs, nil
}

// liveTenants counts the live tenants, -1 if the bench has no operator
// access.
func (b *bench) liveTenants() int {
	if b.op == nil {
		return -1
	}
	ts, err := b.op.reg.List(context.Background())
	if err != nil {
		return -1
	}
	return len(ts)
}

// benchAccount is the account the bench keeps in each of its tenants.
func benchAccount(slug string) string { return "owner@" + slug + ".test" }

// benchPassword is the password of every benchAccount: the same across
// runs, so that a later run signs in to the accounts an earlier one made.
const benchPassword = "bench-Password-tenants-7c41"

// withAccounts returns the shared tenants among slugs whose benchAccount
// exists. One read-only query of the bench's setup, as an administrator
// across tenants, which no query of queries/ does.
func (b *bench) withAccounts(ctx context.Context, slugs []string) (map[string]bool, error) {
	op, err := b.operator(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := op.admin.Query(ctx, `select t.slug from control.tenants t
		join app.users u on u.tenant_id = t.id and u.email = 'owner@' || t.slug || '.test'
		where t.slug = any($1)`, slugs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var slug string
		if err := rows.Scan(&slug); err != nil {
			return nil, err
		}
		have[slug] = true
	}
	return have, rows.Err()
}

// signInAll signs in to every tenant's benchAccount through the server at
// addr (signing up first where it does not exist yet), --concurrency at a
// time, and returns each tenant's access token. Sign-ups and sign-ins
// each hash a password: about 70 a second on two cores.
func (b *bench) signInAll(ctx context.Context, addr string, slugs []string, shared bool) (map[string]string, error) {
	var have map[string]bool
	if shared {
		var err error
		if have, err = b.withAccounts(ctx, slugs); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	tokens := make(map[string]string, len(slugs))
	var mu sync.Mutex
	var errs []error
	var signedUp atomic.Int64
	b.each(slugs, func(slug string) {
		host := slug + "." + b.baseDomain
		creds := map[string]string{"email": benchAccount(slug), "password": benchPassword}
		// Hashing is the machine's bottleneck, and a busy pool answers 503
		// with Retry-After: set-up tries again then, as a client would.
		post := func(path string) (status int, body []byte, err error) {
			for range 10 {
				req, err := b.jsonRequestTo(addr, host, path, creds, "")
				if err != nil {
					return 0, nil, err
				}
				if status, body, err = b.do(req); err != nil || status != http.StatusServiceUnavailable {
					return status, body, err
				}
				time.Sleep(time.Second)
			}
			return status, body, err
		}
		login := func() (int, []byte, error) { return post("/v1/auth/login") }
		status, body, err := 0, []byte(nil), error(nil)
		if shared && !have[slug] {
			status = http.StatusUnauthorized // known to be missing
		} else {
			status, body, err = login()
		}
		if err == nil && status == http.StatusUnauthorized {
			if status, body, err = post("/v1/auth/signup"); err == nil && status == 202 {
				signedUp.Add(1)
				status, body, err = login()
			}
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err == nil && status == 200 {
			err = json.Unmarshal(body, &tok)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil || status != 200 {
			if len(errs) < 5 {
				errs = append(errs, fmt.Errorf("sign in on %s: %d %s %v", slug, status, body, err))
			}
			return
		}
		tokens[slug] = tok.AccessToken
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	fmt.Printf("  signed in to %d tenants (%d signed up first) in %.1fs\n", len(tokens), signedUp.Load(), time.Since(start).Seconds())
	return tokens, nil
}

// each runs do for every slug, --concurrency at a time.
func (b *bench) each(slugs []string, do func(slug string)) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range b.conc {
		wg.Go(func() {
			for slug := range work {
				do(slug)
			}
		})
	}
	for _, slug := range slugs {
		work <- slug
	}
	close(work)
	wg.Wait()
}
