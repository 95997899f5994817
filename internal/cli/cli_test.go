package cli

import (
	"flag"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string // "n wait s"
		wantErr string
	}{
		{name: "defaults", want: "512 2m0s x"},
		{name: "from env", env: map[string]string{"T_N": "7", "T_WAIT": "5s", "T_S": "y"}, want: "7 5s y"},
		{name: "flag beats env", args: []string{"--n", "9"}, env: map[string]string{"T_N": "7"}, want: "9 2m0s x"},
		{name: "remark after the name", env: map[string]string{"T_S": "z"}, want: "512 2m0s z"},
		{name: "bad int names the variable", env: map[string]string{"T_N": "5O"}, wantErr: `environment variable T_N="5O" (for --n)`},
		{name: "bad duration names the variable", env: map[string]string{"T_WAIT": "soon"}, wantErr: `T_WAIT="soon"`},
		{name: "no variable, no effect", env: map[string]string{"T_NONE": "1"}, want: "512 2m0s x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			n := fs.Int("n", 512, "how many [T_N]")
			wait := fs.Duration("wait", 2*time.Minute, "how long [T_WAIT]")
			s := fs.String("s", "x", "a string [T_S, a remark]")
			fs.Bool("b", false, "no variable")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := applyEnv(fs, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join([]string{strconv.Itoa(*n), wait.String(), *s}, " "); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
