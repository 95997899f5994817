package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"

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
