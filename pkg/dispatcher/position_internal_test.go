package dispatcher

import (
	"strings"
	"testing"
)

// FuzzRequestID: a request ID accepted as a lookup key is short and made
// only of characters safe in a path, a log line and a JSON string.
func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"r-42", "", "a b", "x/../y", strings.Repeat("a", 65), "id:1.2_3", "é", "a\nb", "%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !validRequestID(id) {
			return
		}
		if len(id) == 0 || len(id) > maxRequestID || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") != "" {
			t.Fatalf("accepted %q", id)
		}
	})
}
