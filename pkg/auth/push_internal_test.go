package auth

import (
	"errors"
	"testing"
)

func TestParseClaimsUpdate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error // nil: accepted; errAny: some error
	}{
		{"stored", `{"server":{},"data":{"account":"AX","code":200,"message":"jwt updated"}}`, nil},
		{"refused", `{"server":{},"error":{"account":"AX","code":500,"description":"jwt validation failed"}}`, ErrPushRefused},
		{"no result", `{"server":{}}`, errAny},
		{"not JSON", `jwt updated`, errAny},
	}
	for _, tt := range tests {
		err := parseClaimsUpdate([]byte(tt.in))
		switch {
		case tt.wantErr == nil && err != nil, tt.wantErr != nil && err == nil:
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.wantErr)
		case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

var errAny = errors.New("any error")

// FuzzParseClaimsUpdate: a server's answer never panics the decoder, and
// only an answer with a result and no error is success.
func FuzzParseClaimsUpdate(f *testing.F) {
	f.Add([]byte(`{"data":{"code":200}}`))
	f.Add([]byte(`{"error":{"code":500,"description":"x"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = parseClaimsUpdate(b)
	})
}
