package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// allowedDeps are the modules outside the standard library that the
// package may import: an app that verifies tokens must not take in the
// server (fiber, pgx, goose, go-mail) or Gatehouse's own packages.
var allowedDeps = []string{
	"github.com/golang-jwt/jwt/v5",
	"golang.org/x/sync",
}

func TestDependencies(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the package's dependencies: %v", err)
	}
	const self = "github.com/gatehouse/gatehouse/identity/client"
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", self).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing, not even the package")
	}
	for _, dep := range deps {
		if dep == self {
			continue
		}
		ok := false
		for _, allowed := range allowedDeps {
			ok = ok || dep == allowed || strings.HasPrefix(dep, allowed+"/")
		}
		if !ok {
			t.Errorf("identity/client imports %s: it must stay the standard library and golang-jwt", dep)
		}
	}
}
