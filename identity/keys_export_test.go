package identity

// KeyReads is how many times k read a tenant's keys for kids not in
// memory, for tests.
func (k *Keys) KeyReads() int64 { return k.keyReads.Load() }
