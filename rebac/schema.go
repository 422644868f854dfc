package rebac

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
)

// SchemaText is the SpiceDB schema Gatehouse applies on start.
//
//go:embed schema.zed
var SchemaText string

// Definition is one object type of the schema: its relations, each with
// the subjects it admits ("user", "group#member", "user:*"), and its
// permissions.
type Definition struct {
	Relations   map[string][]string
	Permissions map[string]bool
}

// Schema maps each object type of SchemaText to its definition, for
// checking input against it before SpiceDB sees it.
var Schema = parseSchema(SchemaText)

var (
	definitionLine = regexp.MustCompile(`^definition ([a-z_]+) \{`)
	relationLine   = regexp.MustCompile(`^relation ([a-z_]+): (.+)$`)
	permissionLine = regexp.MustCompile(`^permission ([a-z_]+) = `)
)

// parseSchema reads the parts of a schema that input checks need. It
// knows only the shapes schema.zed uses; TestSchemaParses holds them to
// what SpiceDB itself reads.
func parseSchema(text string) map[string]*Definition {
	defs := map[string]*Definition{}
	var cur *Definition
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case line == "":
		case line == "}":
			cur = nil
		case definitionLine.MatchString(line):
			cur = &Definition{Relations: map[string][]string{}, Permissions: map[string]bool{}}
			defs[definitionLine.FindStringSubmatch(line)[1]] = cur
		case cur != nil && relationLine.MatchString(line):
			m := relationLine.FindStringSubmatch(line)
			for _, s := range strings.Split(m[2], "|") {
				cur.Relations[m[1]] = append(cur.Relations[m[1]], strings.TrimSpace(s))
			}
		case cur != nil && permissionLine.MatchString(line):
			cur.Permissions[permissionLine.FindStringSubmatch(line)[1]] = true
		default:
			panic(fmt.Sprintf("rebac: schema.zed line not understood: %q", line))
		}
	}
	return defs
}

// HasPermission reports whether objects of type typ have permission p
// (a permission or a relation, both of which SpiceDB checks).
func HasPermission(typ, p string) bool {
	d := Schema[typ]
	if d == nil {
		return false
	}
	_, isRelation := d.Relations[p]
	return d.Permissions[p] || isRelation
}

// Admits reports whether relation rel of type typ takes subjects of
// subjectType (with subjectRelation, "" for a plain subject).
func Admits(typ, rel, subjectType, subjectRelation string) bool {
	d := Schema[typ]
	if d == nil {
		return false
	}
	want := subjectType
	if subjectRelation != "" {
		want += "#" + subjectRelation
	}
	for _, s := range d.Relations[rel] {
		if s == want {
			return true
		}
	}
	return false
}
