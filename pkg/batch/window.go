package batch

import (
	"fmt"
	"strings"
	"time"
)

// Completion windows: how long a batch has to finish, from its creation.
// OpenAI's Batch API knows only "24h"; any duration from a second (for
// tests and trials) to the 7 days records and results are kept is accepted
// here.
const (
	DefaultCompletionWindow = 24 * time.Hour
	MinCompletionWindow     = time.Second
	MaxCompletionWindow     = 7 * 24 * time.Hour
)

// ParseWindow parses a completion window such as "24h", "90m" or "30s".
func ParseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("completion window %q is not a duration such as \"24h\"", s)
	}
	return d, checkWindow(d)
}

// checkWindow reports a window out of range.
func checkWindow(d time.Duration) error {
	if d < MinCompletionWindow || d > MaxCompletionWindow {
		return fmt.Errorf("completion window %s is not between %s and %s", FormatWindow(d), FormatWindow(MinCompletionWindow), FormatWindow(MaxCompletionWindow))
	}
	return nil
}

// FormatWindow writes a window as OpenAI does, "24h", rather than "24h0m0s".
func FormatWindow(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
