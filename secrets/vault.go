package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Config says how to reach and log in to Vault.
type Config struct {
	Addr string // e.g. https://vault.internal:8200
	// Token authenticates directly (local development, operators' tools).
	// Servers use AppRole instead: RoleID and SecretID, from the
	// environment, log in and the token is renewed for as long as it can
	// be, then the server logs in again.
	Token            string
	RoleID, SecretID string
	AppRoleMount     string        // default approle
	KVMount          string        // KV version 2; default kv
	TransitMount     string        // default transit
	Timeout          time.Duration // per request; default 5s
}

// Vault is the adapter to HashiCorp Vault: tenants' KV secrets, their
// Transit keys, and the health the server reports. It is safe for
// concurrent use.
type Vault struct {
	c           *api.Client
	kv, transit string
	log         *slog.Logger
	healthErr   atomic.Pointer[error] // last health check's failure; nil: healthy
	stopRenew   context.CancelFunc
	renewDone   chan struct{}
}

// Connect returns a Vault client logged in as cfg says. With AppRole it
// keeps the token alive in the background until Close. Returns Invalid for
// an incomplete configuration, Unavailable if Vault cannot be reached to
// log in.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Vault, error) {
	if cfg.Addr == "" {
		return nil, problem.Errorf(problem.Invalid, "no Vault address: set GATEHOUSE_VAULT_ADDR")
	}
	approle := cfg.RoleID != "" || cfg.SecretID != ""
	switch {
	case approle && (cfg.RoleID == "" || cfg.SecretID == ""):
		return nil, problem.Errorf(problem.Invalid, "Vault AppRole needs both a role id and a secret id")
	case approle && cfg.Token != "":
		return nil, problem.Errorf(problem.Invalid, "give Vault either a token or an AppRole, not both")
	case !approle && cfg.Token == "":
		return nil, problem.Errorf(problem.Invalid, "no Vault credentials: set GATEHOUSE_VAULT_TOKEN, or GATEHOUSE_VAULT_ROLE_ID and GATEHOUSE_VAULT_SECRET_ID")
	}
	if cfg.KVMount == "" {
		cfg.KVMount = "kv"
	}
	if cfg.TransitMount == "" {
		cfg.TransitMount = "transit"
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if !validName(cfg.KVMount) || !validName(cfg.TransitMount) || !validName(cfg.AppRoleMount) {
		return nil, problem.Errorf(problem.Invalid, "Vault mount names may hold only letters, digits, '.', '_' and '-'")
	}
	ac := api.DefaultConfig()
	ac.Address = cfg.Addr
	ac.Timeout = cfg.Timeout
	// One quick retry: a sealed or stopped Vault should surface as a 503 in
	// the time a user waits, not after several backoffs.
	ac.MaxRetries = 1
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "Vault client settings are invalid")
	}
	c.ClearToken() // never pick up VAULT_TOKEN from the environment by accident
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &Vault{c: c, kv: cfg.KVMount, transit: cfg.TransitMount, log: log}
	if !approle {
		c.SetToken(cfg.Token)
		return v, nil
	}
	secret, err := v.appRoleLogin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	renewCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.stopRenew, v.renewDone = cancel, make(chan struct{})
	go v.keepLoggedIn(renewCtx, cfg, secret)
	return v, nil
}

// Close stops token renewal.
func (v *Vault) Close() {
	if v.stopRenew != nil {
		v.stopRenew()
		<-v.renewDone
	}
}

func (v *Vault) appRoleLogin(ctx context.Context, cfg Config) (*api.Secret, error) {
	s, err := v.c.Logical().WriteWithContext(ctx, "auth/"+cfg.AppRoleMount+"/login", map[string]any{
		"role_id": cfg.RoleID, "secret_id": cfg.SecretID,
	})
	if err != nil {
		return nil, v.fail("log in to Vault with AppRole", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("log in to Vault with AppRole: no token in the answer")
	}
	v.c.SetToken(s.Auth.ClientToken)
	return s, nil
}

// keepLoggedIn renews the AppRole token while Vault allows, and logs in
// again before it expires: when renewal ends (the token reached its max
// TTL, or was revoked), or when renewals stop extending it and expiry draws
// near, whichever comes first.
func (v *Vault) keepLoggedIn(ctx context.Context, cfg Config, secret *api.Secret) {
	defer close(v.renewDone)
	for {
		w, err := v.c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			v.log.Error("vault token renewal", "err", err)
			return
		}
		go w.Start()
		deadline := time.NewTimer(reloginIn(secret))
	watch:
		for {
			select {
			case <-ctx.Done():
				deadline.Stop()
				w.Stop()
				return
			case err := <-w.DoneCh():
				if err != nil {
					v.log.Warn("vault token renewal ended", "err", err)
				}
				break watch
			case r := <-w.RenewCh():
				deadline.Reset(reloginIn(r.Secret))
			case <-deadline.C:
				break watch
			}
		}
		deadline.Stop()
		w.Stop()
		for {
			s, err := v.appRoleLogin(ctx, cfg)
			if err == nil {
				secret = s
				break
			}
			v.log.Warn("vault login", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// reloginIn is how long a token just issued or renewed may be used before
// logging in again is safer than waiting for the next renewal: most of its
// lease, leaving a fifth (at least a second, for a loaded machine) to log
// in.
func reloginIn(s *api.Secret) time.Duration {
	lease := time.Minute
	if s != nil && s.Auth != nil && s.Auth.LeaseDuration > 0 {
		lease = time.Duration(s.Auth.LeaseDuration) * time.Second
	}
	return max(lease-max(lease/5, time.Second), 100*time.Millisecond)
}

// EnsureMounts enables the KV v2 and Transit mounts Gatehouse uses if they
// are missing, so a fresh Vault works on first start. It needs
// sys/mounts rights; with a policy that lacks them, mount the engines
// beforehand (see the README) and this finds them in place.
func (v *Vault) EnsureMounts(ctx context.Context) error {
	want := map[string]*api.MountInput{
		v.kv:      {Type: "kv", Options: map[string]string{"version": "2"}, Description: "Gatehouse tenant secrets"},
		v.transit: {Type: "transit", Description: "Gatehouse tenant keys"},
	}
	have, err := v.c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return v.fail("list Vault mounts", err)
	}
	for path, in := range want {
		m, ok := have[path+"/"]
		if ok {
			if m.Type != in.Type || (in.Type == "kv" && m.Options["version"] != "2") {
				return fmt.Errorf("vault mount %s/ is %s (options %v), want %s", path, m.Type, m.Options, in.Type)
			}
			continue
		}
		if err := v.c.Sys().MountWithContext(ctx, path, in); err != nil {
			return v.fail("mount "+path, err)
		}
		v.log.Info("mounted vault secrets engine", "path", path, "type", in.Type)
	}
	return nil
}

// Check asks Vault whether it is initialised, unsealed and reachable, and
// remembers the answer for Healthy. Returns Unavailable if not.
func (v *Vault) Check(ctx context.Context) error {
	h, err := v.c.Sys().HealthWithContext(ctx)
	switch {
	case err != nil:
		err = v.fail("vault health", err)
	case !h.Initialized:
		err = problem.Errorf(problem.Unavailable, "secret store is not initialised")
	case h.Sealed:
		err = problem.Errorf(problem.Unavailable, "secret store is sealed")
	}
	if err != nil {
		v.healthErr.Store(&err)
	} else {
		v.healthErr.Store(nil)
	}
	return err
}

// Healthy returns the failure the last Check saw, or nil.
func (v *Vault) Healthy() error {
	if p := v.healthErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Watch runs Check every interval until ctx ends, so that Healthy follows
// Vault's state, and logs when that state changes.
func (v *Vault) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var was error
	for {
		checkCtx, cancel := context.WithTimeout(ctx, interval)
		err := v.Check(checkCtx)
		cancel()
		if (err == nil) != (was == nil) {
			if err != nil {
				v.log.Error("secret store unavailable", "err", err)
			} else {
				v.log.Info("secret store available again")
			}
		}
		was = err
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Put stores value as secret name of tenant t and returns its reference.
// name is "<path>#<key>" (e.g. smtp#password) or "<path>" (key "value");
// other keys of the same path are kept. Returns Invalid for a bad name,
// Unavailable if Vault is down.
func (v *Vault) Put(ctx context.Context, t tenancy.ID, name, value string) (Ref, error) {
	r, err := refFor(v.kv, t, name)
	if err != nil {
		return Ref{}, err
	}
	return r, v.putKeys(ctx, r.Path, map[string]string{r.Key: value})
}

// putKeys sets keys of the KV secret at path, keeping its other keys. It
// reads, merges and writes with check-and-set, so two writers of different
// keys of one path do not lose each other's key.
func (v *Vault) putKeys(ctx context.Context, path string, set map[string]string) error {
	kv := v.c.KVv2(v.kv)
	for attempt := 0; ; attempt++ {
		data := map[string]any{}
		version := 0
		cur, err := kv.Get(ctx, path)
		switch {
		case err == nil:
			for k, val := range cur.Data {
				data[k] = val
			}
			version = cur.VersionMetadata.Version
		case errors.Is(err, api.ErrSecretNotFound):
		default:
			return v.fail("read secret", err)
		}
		for k, val := range set {
			data[k] = val
		}
		_, err = kv.Put(ctx, path, data, api.WithCheckAndSet(version))
		if err == nil {
			return nil
		}
		if attempt >= 5 || !isCASMismatch(err) {
			return v.fail("write secret", err)
		}
	}
}

// Get returns the value r points at, on behalf of tenant t. Returns
// Forbidden if r is not under t's own path, NotFound if there is no such
// value, Unavailable if Vault is down.
func (v *Vault) Get(ctx context.Context, t tenancy.ID, r Ref) (string, error) {
	if err := owned(v.kv, t, r); err != nil {
		return "", err
	}
	s, err := v.c.KVv2(v.kv).Get(ctx, r.Path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return "", problem.Errorf(problem.NotFound, "secret %s does not exist", r)
	}
	if err != nil {
		return "", v.fail("read secret", err)
	}
	val, ok := s.Data[r.Key].(string)
	if !ok {
		return "", problem.Errorf(problem.NotFound, "secret %s does not exist", r)
	}
	return val, nil
}

// Delete removes the value r points at, on behalf of tenant t; the path's
// other keys stay, and a path left empty is destroyed with its history.
// Deleting a missing value is not an error. Returns Forbidden if r is not
// under t's own path, Unavailable if Vault is down.
func (v *Vault) Delete(ctx context.Context, t tenancy.ID, r Ref) error {
	if err := owned(v.kv, t, r); err != nil {
		return err
	}
	kv := v.c.KVv2(v.kv)
	for attempt := 0; ; attempt++ {
		cur, err := kv.Get(ctx, r.Path)
		if errors.Is(err, api.ErrSecretNotFound) {
			return nil
		}
		if err != nil {
			return v.fail("read secret", err)
		}
		if _, ok := cur.Data[r.Key]; !ok {
			return nil
		}
		delete(cur.Data, r.Key)
		if len(cur.Data) == 0 {
			// Destroy every version, not only the newest: old versions
			// would still hold the value.
			if err := kv.DeleteMetadata(ctx, r.Path); err != nil {
				return v.fail("delete secret", err)
			}
			return nil
		}
		_, err = kv.Put(ctx, r.Path, cur.Data, api.WithCheckAndSet(cur.VersionMetadata.Version))
		if err == nil {
			// Earlier versions still hold the removed value.
			if err := kv.Destroy(ctx, r.Path, versionsBefore(cur.VersionMetadata.Version+1)); err != nil {
				return v.fail("destroy old secret versions", err)
			}
			return nil
		}
		if attempt >= 5 || !isCASMismatch(err) {
			return v.fail("write secret", err)
		}
	}
}

func versionsBefore(n int) []int {
	vs := make([]int, 0, n-1)
	for i := 1; i < n; i++ {
		vs = append(vs, i)
	}
	return vs
}

// deleteTenantTree destroys every KV secret under tenant t's path, with all
// versions.
func (v *Vault) deleteTenantTree(ctx context.Context, t tenancy.ID) error {
	return v.deleteTree(ctx, tenantPath(t)+"/")
}

func (v *Vault) deleteTree(ctx context.Context, folder string) error {
	s, err := v.c.Logical().ListWithContext(ctx, v.kv+"/metadata/"+folder)
	if err != nil {
		return v.fail("list secrets", err)
	}
	if s == nil {
		return nil
	}
	keys, _ := s.Data["keys"].([]any)
	for _, k := range keys {
		name, _ := k.(string)
		if name == "" {
			continue
		}
		if strings.HasSuffix(name, "/") {
			if err := v.deleteTree(ctx, folder+name); err != nil {
				return err
			}
			continue
		}
		if err := v.c.KVv2(v.kv).DeleteMetadata(ctx, folder+name); err != nil {
			return v.fail("delete secret", err)
		}
	}
	return nil
}

// fail turns a Vault client error into a domain error: Vault unreachable,
// sealed, overloaded or refusing the server's token is Unavailable (503
// for the caller); anything else
// keeps the operation's name for operators. Vault's answers name paths,
// never secret values.
func (v *Vault) fail(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return problem.Wrap(problem.Unavailable, fmt.Errorf("%s: %w", op, err), "secret store unavailable, try again later")
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusServiceUnavailable || re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
			return problem.Wrap(problem.Unavailable, fmt.Errorf("%s: %w", op, err), "secret store unavailable, try again later")
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			// The server's own token was refused (expired, revoked, a
			// policy without the path): nothing the caller did.
			return problem.Wrap(problem.Unavailable, fmt.Errorf("%s: %w", op, err), "secret store refused this server, try again later")
		case re.StatusCode == http.StatusNotFound:
			return problem.Wrap(problem.NotFound, fmt.Errorf("%s: %w", op, err), "not found in the secret store")
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	// Anything that is not an answer from Vault is a transport failure.
	return problem.Wrap(problem.Unavailable, fmt.Errorf("%s: %w", op, err), "secret store unavailable, try again later")
}

func isCASMismatch(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest &&
		strings.Contains(strings.Join(re.Errors, " "), "check-and-set")
}
