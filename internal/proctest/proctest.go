// Package proctest runs the real servers that the xxxtest packages start
// for tests (Vault, Mailpit, …): it finds their binaries in the project's
// tool cache, picks free loopback ports, and starts and stops the
// processes, keeping what they print.
//
// A started process dies with the test binary, even one that crashed.
package proctest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Log collects what processes print; safe to read while they write.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Process is a running server process.
type Process struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Start starts the binary bin with args and the environment env added to
// the test's own, writing its output to log.
func Start(log *Log, env []string, bin string, args ...string) (*Process, error) {
	p := &Process{stop: make(chan struct{}), done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		// Pdeathsig fires when the thread that started the child exits:
		// pin this goroutine to its thread for the process's lifetime, so
		// that the child dies with the test binary, and only then.
		runtime.LockOSThread()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", filepath.Base(bin), err)
			return
		}
		started <- nil
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-p.stop:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop stops the process (SIGTERM, then SIGKILL after 10 seconds) and
// waits until it has exited.
func (p *Process) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

// Binary finds the binary of a pinned tool: the path in the environment
// variable env, or the newest <tool>-v* in the tool cache (.cache/tools,
// which tools/test.sh fills) of the enclosing checkout.
func Binary(env, tool string) (string, error) {
	if b := os.Getenv(env); b != "" {
		return b, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		found, _ := filepath.Glob(filepath.Join(dir, ".cache", "tools", tool+"-v*"))
		var bins []string
		for _, p := range found {
			if strings.HasSuffix(p, ".tmp") { // still being built
				continue
			}
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				bins = append(bins, p)
			}
		}
		if len(bins) > 0 {
			sort.Strings(bins)
			return bins[len(bins)-1], nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s binary: run tools/test.sh (which builds it into .cache/tools) or set %s", tool, env)
		}
		dir = parent
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
