// Package pgtest starts throwaway Postgres clusters for tests, the way
// net/http/httptest starts servers: initdb into a temporary folder, a
// postmaster on a free loopback port with wal_level=logical, and one
// migrated database per test, cloned from a template in milliseconds.
//
// A test package that uses it runs its tests through proctest.Main, which
// stops the clusters and removes their folders afterwards, failed tests or
// not:
//
//	func TestMain(m *testing.M) { proctest.Main(m) }
//
// Postgres refuses to run as root; under root the clusters run as the
// postgres system user.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Cluster is a running throwaway Postgres cluster. Its superuser is
// postgres, trusted on loopback.
type Cluster struct {
	Port int
	dir  string
	stop chan struct{}
	done chan error

	bin, data string
	cred      *syscall.Credential
	settings  []string // -c name=value after the defaults

	seq       atomic.Int64
	templates sync.Map // name -> *templateOnce
}

type templateOnce struct {
	once sync.Once
	err  error
}

var (
	mu       sync.Mutex
	clusters []*Cluster // clusters[0] is the primary, [1] the second
)

func stopAll() {
	mu.Lock()
	defer mu.Unlock()
	for _, c := range clusters {
		c.Stop()
	}
	clusters = nil
}

// Primary returns the package's shared cluster, starting it on first use.
func Primary(t testing.TB) *Cluster { return nth(t, 0) }

// Second returns a second cluster, for tests that need two (a shared
// database and a silo on another cluster).
func Second(t testing.TB) *Cluster { return nth(t, 1) }

func nth(t testing.TB, i int) *Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for len(clusters) <= i {
		c, err := Start()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if len(clusters) == 0 {
			proctest.AtExit(stopAll) // the test binary's TestMain is proctest.Main
		}
		clusters = append(clusters, c)
	}
	return clusters[i]
}

// Start starts a new cluster, with settings ("name=value") over the
// defaults. The caller stops it.
func Start(settings ...string) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-pgtest-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// A port can be taken between choosing and binding it: try a few.
	var lastErr error
	for range 5 {
		c := &Cluster{Port: freePort(), dir: dir, stop: make(chan struct{}), done: make(chan error, 1), bin: bin, data: data, cred: cred, settings: settings}
		if lastErr = c.start(bin, data, cred); lastErr == nil {
			return c, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func (c *Cluster) start(bin, data string, cred *syscall.Credential) error {
	var logs bytes.Buffer
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits; pin
		// this goroutine to its thread for the cluster's lifetime so that
		// the postmaster dies with the test binary, and only then.
		runtime.LockOSThread()
		cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
			"-p", strconv.Itoa(c.Port), "-k", c.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "wal_level=logical",
			"-c", "max_replication_slots=32", "-c", "max_wal_senders=32",
			// Room for several moves' subscriptions at once, each with its
			// table copies; and a subscription starts in 0.1s, not 5s.
			"-c", "max_worker_processes=48", "-c", "max_logical_replication_workers=32",
			"-c", "wal_retrieve_retry_interval=100ms",
			"-c", "max_connections=400",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic",
		)
		for _, s := range c.settings {
			cmd.Args = append(cmd.Args, "-c", s)
		}
		cmd.Stdout, cmd.Stderr = &logs, &logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-c.stop:
			_ = cmd.Process.Signal(syscall.SIGQUIT) // immediate shutdown
			c.done <- <-exited
		case err := <-exited:
			c.done <- fmt.Errorf("postgres exited: %v\n%s", err, logs.String())
		}
	}()
	if err := <-started; err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		cancel()
		if err == nil {
			// The port may be another process's cluster, started between
			// our choosing the port and binding it (ours then fails to
			// bind and exits): make sure it is ours.
			var dir string
			err = conn.QueryRow(context.Background(), "show data_directory").Scan(&dir)
			conn.Close(context.Background())
			if err == nil && sameDir(dir, data) {
				return nil
			}
			close(c.stop)
			<-c.done
			return fmt.Errorf("port %d is another cluster's (%s)", c.Port, dir)
		}
		select {
		case exitErr := <-c.done:
			return exitErr
		default:
		}
		if time.Now().After(deadline) {
			close(c.stop)
			<-c.done
			return fmt.Errorf("postgres did not accept connections in 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameDir reports whether two paths name one folder.
func sameDir(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// Crash stops the cluster the way a crash does (immediate shutdown: no
// checkpoint, every session cut) and starts it again on the same port and
// data, which it recovers. For tests of what survives a restart; use a
// cluster of the test's own (Start), not the package's shared ones.
func (c *Cluster) Crash() error {
	c.Down()
	return c.Up()
}

// Down stops the cluster the way a crash does, keeping its data for Up:
// an outage of the database for tests that check what the server does
// meanwhile. Use a cluster of the test's own.
func (c *Cluster) Down() {
	close(c.stop)
	<-c.done
	c.stop, c.done = make(chan struct{}), make(chan error, 1)
}

// Up starts a cluster that Down stopped, on the same port and data.
func (c *Cluster) Up() error { return c.start(c.bin, c.data, c.cred) }

// Stop shuts the cluster down and removes its folder.
func (c *Cluster) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
	}
	os.RemoveAll(c.dir)
}

// URL returns the superuser's URL for database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, url.PathEscape(db))
}

// AppURL returns gatehouse_app's URL for database db.
func (c *Cluster) AppURL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", tenancy.AppRoleName, c.Port, url.PathEscape(db))
}

// Exec runs statements as superuser in database db.
func (c *Cluster) Exec(t testing.TB, db string, sql ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("pgtest: %s: %v", s, err)
		}
	}
}

// DumpAll returns pg_dumpall's output for the whole cluster: roles and
// every database, as a backup would hold them.
func (c *Cluster) DumpAll(t testing.TB) string {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dumpall"), "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres").Output()
	if err != nil {
		t.Fatalf("pgtest: pg_dumpall: %v", err)
	}
	return string(out)
}

// NewDatabase creates a database for this test, cloned from template (""
// for an empty one), and drops it when the test ends.
func (c *Cluster) NewDatabase(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", c.seq.Add(1), sanitize(t.Name()))
	stmt := "create database " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " template " + pgx.Identifier{template}.Sanitize()
	}
	c.Exec(t, "postgres", stmt)
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
			_, _ = conn.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)")
			conn.Close(ctx)
		}
	})
	return name
}

// Template makes sure database name exists, built once per cluster by build
// (given the database's superuser URL), for NewDatabase to clone.
func (c *Cluster) Template(t testing.TB, name string, build func(url string) error) {
	t.Helper()
	v, _ := c.templates.LoadOrStore(name, &templateOnce{})
	o := v.(*templateOnce)
	o.once.Do(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			o.err = err
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
			o.err = err
			return
		}
		o.err = build(c.URL(name))
	})
	if o.err != nil {
		t.Fatalf("pgtest: template %s: %v", name, o.err)
	}
}

// Pool opens a pool on url for the test and closes it at cleanup.
func Pool(t testing.TB, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Migrations returns a goose provider of one migration set (fsys,
// recording its versions in table) on database url, run as the owner role
// the migrations run as: for tests that move a database to an earlier
// version and back. It is closed at cleanup.
func Migrations(t testing.TB, url string, fsys fs.FS, table string) *goose.Provider {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db := stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "set role "+tenancy.OwnerRoleName)
		return err
	}))
	db.SetMaxOpenConns(1)
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithTableName(table), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		db.Close()
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// binDir finds Postgres's server binaries: on PATH, or the newest
// /usr/lib/postgresql/*/bin.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Follow a symlink (/usr/local/bin/initdb -> …/bin/initdb) to the
		// folder that has the other tools too.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no Postgres server binaries (initdb) found; install postgresql")
}

// runAs returns the credentials to run Postgres with: nil normally, the
// postgres user's when running as root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres system user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
