package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
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

func TestListenError(t *testing.T) {
	inUse := fmt.Errorf("x: %w", &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)})
	tests := []struct {
		name string
		err  error
		env  string
		want string
	}{
		{"in use", inUse, "T_LISTEN", "cannot listen for the API on 127.0.0.1:1: address already in use; choose another address with --listen or T_LISTEN"},
		{"no variable", inUse, "", "cannot listen for the API on 127.0.0.1:1: address already in use; choose another address with --listen"},
		{"not a system call error", errors.New("boom"), "T_LISTEN", "cannot listen for the API on 127.0.0.1:1: boom; choose another address with --listen or T_LISTEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ListenError(tt.err, "the API", "127.0.0.1:1", "listen", tt.env)
			if got.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap %v", got, tt.err)
			}
		})
	}
}
