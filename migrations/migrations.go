// Package migrations embeds Gatehouse's goose SQL migrations: Control for
// the control plane (schema control, primary database only) and Tenant for
// tenant data (schema app, in the shared database and in every silo).
//
// A landed migration is never edited; add a new one.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed control/*.sql tenant/*.sql
var files embed.FS

// Control returns the control-plane migrations.
func Control() fs.FS { return sub("control") }

// Tenant returns the tenant-data migrations.
func Tenant() fs.FS { return sub("tenant") }

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // unreachable: dir is embedded above
	}
	return f
}
