package ollama

import "testing"

func TestErrorMessage(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"error":"model 'x' not found"}`, "model 'x' not found"},
		{`{"error":{"message":"bad","type":"api_error"}}`, "bad"},
		{"404 page not found", "404 page not found"},
		{"  ", ""},
	}
	for _, tt := range tests {
		if got := ErrorMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("ErrorMessage(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}
