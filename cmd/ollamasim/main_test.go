package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

func TestParseModels(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []ollamasim.Model
	}{
		{"one", "llama3.2", []ollamasim.Model{{Name: "llama3.2"}}},
		{"spaces and empties", " llama3.2 , ,qwen3:8b,", []ollamasim.Model{{Name: "llama3.2"}, {Name: "qwen3:8b"}}},
		{"embedding by name", "nomic-embed-text,mxbai-EMBED-large", []ollamasim.Model{
			{Name: "nomic-embed-text", Capabilities: []string{"embedding"}},
			{Name: "mxbai-EMBED-large", Capabilities: []string{"embedding"}},
		}},
		{"none", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseModels(tt.in)
			if !slices.EqualFunc(got, tt.want, func(a, b ollamasim.Model) bool {
				return a.Name == b.Name && slices.Equal(a.Capabilities, b.Capabilities)
			}) {
				t.Errorf("parseModels(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// TestTakenListenFails checks that a taken --listen address fails at once
// with one line naming it and the flag.
func TestTakenListenFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	taken := ln.Addr().String()
	err = run([]string{"--listen", taken}, io.Discard)
	want := fmt.Sprintf("cannot listen for the simulated Ollama on %s: address already in use; choose another address with --listen", taken)
	if err == nil || err.Error() != want {
		t.Errorf("run: %v\nwant: %s", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("run: %v, want it to wrap EADDRINUSE", err)
	}
}

func TestSetModelLoads(t *testing.T) {
	tests := []struct {
		name, spec string
		want       []time.Duration // per model of "llama3.2,qwen3:8b"
		wantErr    string
	}{
		{"none", "", []time.Duration{0, 0}, ""},
		{"one", "qwen3:8b=8s", []time.Duration{0, 8 * time.Second}, ""},
		{"names as Ollama resolves them", " LLAMA3.2:latest = 1.5s , Qwen3:8B=0s,", []time.Duration{1500 * time.Millisecond, 0}, ""},
		{"no load time", "llama3.2=-1ms", []time.Duration{-time.Millisecond, 0}, ""},
		{"unknown model", "mistral=3s", nil, "--model-load: mistral is not one of --models"},
		{"not a pair", "llama3.2", nil, `--model-load: "llama3.2" is not name=duration`},
		{"bad duration", "llama3.2=3", nil, `--model-load: llama3.2: "3" is not a duration such as 5s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			models := parseModels("llama3.2,qwen3:8b")
			err := setModelLoads(models, tt.spec)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("setModelLoads(%q) = %v, want %s", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("setModelLoads(%q): %v", tt.spec, err)
			}
			for i, m := range models {
				if m.LoadDuration != tt.want[i] {
					t.Errorf("%s: LoadDuration %v, want %v", m.Name, m.LoadDuration, tt.want[i])
				}
			}
		})
	}
}

// TestFlagErrors checks that bad values of the scheduling flags fail at
// start with a message that names them.
func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--max-loaded-models", "-1"}, "MaxLoadedModels must not be negative"},
		{[]string{"--prompt-tps", "-5"}, "PromptTokensPerSecond must be a positive number or 0"},
		{[]string{"--model-load", "nope=1s"}, "--model-load: nope is not one of --models"},
	}
	for _, tt := range tests {
		err := run(append(tt.args, "--listen", "127.0.0.1:0"), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
		}
	}
}
