package identity

import "golang.org/x/text/language"

// KeyReads is how many times k read a tenant's keys for kids not in
// memory, for tests.
func (k *Keys) KeyReads() int64 { return k.keyReads.Load() }

// PageCatalog is the hosted sign-in's texts by language, for tests.
func PageCatalog() map[language.Tag]map[string]string {
	out := map[language.Tag]map[string]string{}
	for l, w := range catalog {
		out[l] = w
	}
	return out
}
