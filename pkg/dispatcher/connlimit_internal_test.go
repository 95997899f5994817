package dispatcher

import "testing"

func TestConnCap(t *testing.T) {
	tests := []struct {
		name    string
		asked   int    // Config.MaxConns
		fdLimit uint64 // the open-file limit, 0 unknown
		want    int
	}{
		{"default, limit unknown", 0, 0, defaultMaxConns},
		{"default under a high limit", 0, 1 << 20, defaultMaxConns},
		{"default above half the limit", 0, 1024, 512},
		{"default, ulimit 20000", 0, 20000, defaultMaxConns},
		{"asked, under half the limit", 100, 1024, 100},
		{"asked, above half the limit", 30000, 20000, 10000},
		{"asked, limit unknown", 30000, 0, 30000},
		{"a limit of one file", 0, 1, 1},
	}
	for _, tt := range tests {
		if got := connCap(tt.asked, tt.fdLimit); got != tt.want {
			t.Errorf("%s: connCap(%d, %d) = %d, want %d", tt.name, tt.asked, tt.fdLimit, got, tt.want)
		}
	}
}
