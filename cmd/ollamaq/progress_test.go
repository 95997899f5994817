package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestProgress(t *testing.T) {
	tests := []struct {
		name     string
		terminal bool
		total    int
		want     []string // patterns, in order
	}{
		{name: "plain lines off a terminal", total: 10, want: []string{
			`^b1: 5/10, 1 failed, [0-9.]+/s, about \S+ left$`, `^b1: 10/10, 1 failed, [0-9.]+/s$`}},
		{name: "a count without a total", total: -1, want: []string{`^b1: 5, 1 failed`, `^b1: 10, 1 failed`}},
		{name: "a bar on a terminal", terminal: true, total: 10, want: []string{`^b1 +0% \|`, `^b1 \(1 failed\) 100% \|█+\| \(10/10, [0-9]+ req/s\)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			e := &env{stderr: &out, terminal: tt.terminal}
			p := e.newProgress("b1", tt.total, 0)
			p.update(5, "1 failed")
			p.update(10, "1 failed")
			p.finish("1 failed")
			got := strings.Split(strings.ReplaceAll(out.String(), "\r", "\n"), "\n")
			i := 0
			for _, line := range got {
				if i < len(tt.want) && regexp.MustCompile(tt.want[i]).MatchString(strings.TrimSpace(line)) {
					i++
				}
			}
			if i < len(tt.want) {
				t.Errorf("output %q\nhas no line matching %q", out.String(), tt.want[i])
			}
		})
	}
}
