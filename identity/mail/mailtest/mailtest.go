// Package mailtest starts real SMTP servers for tests, the way
// net/http/httptest starts HTTP servers: a Mailpit (a mail catcher) on
// free loopback ports, with its API to read what arrived.
//
// The mailpit binary comes from GATEHOUSE_MAILPIT_BIN, or from the
// project's tool cache (.cache/tools/mailpit-*), which tools/test.sh fills.
//
// Shared returns one server per test binary (tests tell their mails apart
// by recipient), stopped when the tests end (the test binary's TestMain is
// proctest.Main). Tests that stop or break the server start their own
// with Start.
package mailtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/internal/proctest"
)

// Server is a running Mailpit.
type Server struct {
	SMTPPort int
	API      string // http://127.0.0.1:<port>, Mailpit's web UI and API

	bin, dir string
	apiPort  int

	mu   sync.Mutex
	proc *proctest.Process
	logs proctest.Log
}

var shared = proctest.NewShared("mailtest", Launch)

// Shared returns the test binary's shared mail catcher, starting it on
// first use.
func Shared(t testing.TB) *Server { return shared.Get(t) }

// Start starts a mail catcher of the test's own, stopped when the test
// ends.
func Start(t testing.TB) *Server { return proctest.Own(t, "mailtest", Launch) }

// Launch starts a new mail catcher; the caller closes it.
func Launch() (*Server, error) {
	bin, err := proctest.Binary("GATEHOUSE_MAILPIT_BIN", "mailpit")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-mailtest-")
	if err != nil {
		return nil, err
	}
	ports, err := proctest.FreePorts(2)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, SMTPPort: ports[0], apiPort: ports[1]}
	s.API = "http://127.0.0.1:" + strconv.Itoa(s.apiPort)
	if err := s.run(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) run() error {
	proc, err := proctest.Start(&s.logs, nil, s.bin,
		"--smtp", "127.0.0.1:"+strconv.Itoa(s.SMTPPort),
		"--listen", "127.0.0.1:"+strconv.Itoa(s.apiPort),
		"--database", filepath.Join(s.dir, "mailpit.db"),
		"--max", "0", // keep every mail: a test must find its own
		// Any credentials are accepted, over plain text too: Gatehouse's
		// own rules (plain text to loopback only) are what is tested.
		"--smtp-auth-accept-any", "--smtp-auth-allow-insecure",
		"--enable-chaos", "--disable-version-check", "--smtp-disable-rdns", "--quiet")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-proc.Exited():
			return fmt.Errorf("mailpit exited at start:\n%s", s.Logs())
		default:
		}
		res, err := http.Get(s.API + "/readyz")
		if err == nil {
			res.Body.Close()
			if c, err := net.DialTimeout("tcp", s.SMTPAddr(), time.Second); err == nil && res.StatusCode == 200 {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailpit did not answer within 30s:\n%s", s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SMTPAddr is the SMTP server's host:port.
func (s *Server) SMTPAddr() string { return "127.0.0.1:" + strconv.Itoa(s.SMTPPort) }

// URL is the SMTP server as Gatehouse's --smtp-url takes it (plain text,
// which Gatehouse allows to a loopback host only).
func (s *Server) URL() string { return "smtp://" + s.SMTPAddr() + "?tls=none" }

// Config is the SMTP server as mail.NewSMTP takes it.
func (s *Server) Config() mail.SMTPConfig {
	return mail.SMTPConfig{Host: "127.0.0.1", Port: s.SMTPPort, TLS: "none", Timeout: 5 * time.Second}
}

// Address is one mailbox of a received mail.
type Address struct {
	Name    string
	Address string
}

// Message is a mail as the catcher received it.
type Message struct {
	ID        string
	MessageID string
	From      Address
	To        []Address
	ReplyTo   []Address
	Subject   string
	Text      string
	HTML      string
}

// Messages returns the mails received for to, oldest first.
func (s *Server) Messages(t testing.TB, to string) []Message {
	t.Helper()
	ms, err := s.messages(to)
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	return ms
}

func (s *Server) messages(to string) ([]Message, error) {
	var list struct {
		Messages []struct{ ID string }
	}
	q := url.Values{"query": {fmt.Sprintf("to:%q", to)}, "limit": {"1000"}}
	if err := s.get("/api/v1/search?"+q.Encode(), &list); err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(list.Messages))
	for _, m := range list.Messages {
		var full Message
		if err := s.get("/api/v1/message/"+url.PathEscape(m.ID), &full); err != nil {
			return nil, err
		}
		// The search matches substrings; keep exact recipients only.
		for _, a := range full.To {
			if strings.EqualFold(a.Address, to) {
				out = append(out, full)
				break
			}
		}
	}
	// The API lists newest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Wait waits up to timeout until n mails for to have arrived, and returns
// them, oldest first. It fails the test if they do not come.
func (s *Server) Wait(t testing.TB, to string, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms, err := s.messages(to)
		if err != nil {
			t.Fatalf("mailtest: %v", err)
		}
		if len(ms) >= n {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailtest: %d mail(s) for %s after %s; want %d", len(ms), to, timeout, n)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var linkRE = regexp.MustCompile(`https?://[^\s"<>]+`)

// Link returns the first link of m's text body that contains part, or
// fails the test.
func (m Message) Link(t testing.TB, part string) string {
	t.Helper()
	for _, l := range linkRE.FindAllString(m.Text, -1) {
		if strings.Contains(l, part) {
			return l
		}
	}
	t.Fatalf("mailtest: no link with %q in mail %q:\n%s", part, m.Subject, m.Text)
	return ""
}

// Token returns the token query parameter of m's first link that
// contains part.
func (m Message) Token(t testing.TB, part string) string {
	t.Helper()
	u, err := url.Parse(m.Link(t, part))
	if err != nil || u.Query().Get("token") == "" {
		t.Fatalf("mailtest: link in %q has no token", m.Subject)
	}
	return u.Query().Get("token")
}

// Refuse makes the server answer every sender with SMTP code (e.g. 451, a
// temporary failure, or 550, a permanent one); code 0 accepts mail again.
func (s *Server) Refuse(t testing.TB, code int) {
	t.Helper()
	prob := 100
	if code == 0 {
		code, prob = 451, 0
	}
	body, _ := json.Marshal(map[string]any{"Sender": map[string]int{"ErrorCode": code, "Probability": prob}})
	req, _ := http.NewRequest(http.MethodPut, s.API+"/api/v1/chaos", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("mailtest: chaos: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("mailtest: chaos: %s", res.Status)
	}
}

// Stop stops the server; its mails stay for Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart starts a stopped server again on the same ports.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.run(); err != nil {
		t.Fatalf("mailtest: restart: %v", err)
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	proc := s.proc
	s.proc = nil
	s.mu.Unlock()
	if proc != nil {
		proc.Stop()
	}
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.stop()
	os.RemoveAll(s.dir)
}

// Logs returns what the server printed.
func (s *Server) Logs() string { return s.logs.String() }

func (s *Server) get(path string, v any) error {
	res, err := http.Get(s.API + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}
