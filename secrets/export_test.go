package secrets

import "time"

// NewSealerAt is NewSealer with a clock of the test's, for tests of cache
// expiry.
func NewSealerAt(v *Vault, gens Generations, o SealerOptions, now func() time.Time) *Sealer {
	return newSealer(v, gens, o, now)
}

// Expire runs the janitor's pass now.
func (s *Sealer) Expire() { s.expire() }

// CachedKeys returns the plaintext data keys the Sealer holds right now
// (the slices themselves, so a test can see them zeroed after eviction).
func (s *Sealer) CachedKeys() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	for _, k := range s.sealing {
		out = append(out, k.key)
	}
	for _, m := range s.opening {
		for _, k := range m {
			out = append(out, k.key)
		}
	}
	return out
}

// SetBatch sets how many values the Rotator re-wraps per transaction.
func (r *Rotator) SetBatch(n int) { r.batch = n }
