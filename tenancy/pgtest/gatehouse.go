package pgtest

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy"
)

// primaryTemplate is the name of each cluster's migrated template database.
const primaryTemplate = "gatehouse_primary"

// DB is a migrated Gatehouse primary database of one test's own.
type DB struct {
	Cluster  *Cluster
	Name     string
	AdminURL string // superuser
	AppURL   string // gatehouse_app
}

// NewPrimary returns a fresh primary database (control plane and shared
// tenant schema migrated, roles in place) on the package's primary cluster.
func NewPrimary(t testing.TB) *DB {
	t.Helper()
	return NewPrimaryOn(t, Primary(t))
}

// NewPrimaryOn is NewPrimary on a given cluster.
func NewPrimaryOn(t testing.TB, c *Cluster) *DB {
	t.Helper()
	c.Template(t, primaryTemplate, func(url string) error {
		return (&tenancy.Migrator{}).Primary(context.Background(), url)
	})
	name := c.NewDatabase(t, primaryTemplate)
	return &DB{Cluster: c, Name: name, AdminURL: c.URL(name), AppURL: c.AppURL(name)}
}
