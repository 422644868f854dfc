package outbox_test

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/outbox"
)

func TestBackoffDoublesWithJitterUpToItsCeiling(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 7: time.Minute, 100: time.Minute} {
		for range 50 {
			d := outbox.Backoff(time.Second, n, time.Minute)
			if d > want || d < want*3/4 {
				t.Fatalf("Backoff after failure %d = %v, want within [%v, %v]", n, d, want*3/4, want)
			}
		}
	}
	if d := outbox.Backoff(time.Second, 0, time.Minute); d > time.Second {
		t.Fatalf("Backoff before any failure = %v, want at most the first delay", d)
	}
}

func TestTruncateKeepsWholeCharacters(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"ab\u00e9cd", 3, "ab"}, // é is two bytes: not cut in half
		{"\u20ac\u20ac", 4, "\u20ac"},
	} {
		got := outbox.Truncate(tt.in, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
