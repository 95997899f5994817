package dispatcher

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ollamamax/ollamamax/pkg/job"
)

var update = flag.Bool("update", false, "rewrite the generated route table in docs/api.md")

const (
	routeDoc        = "../../docs/api.md"
	routeTableBegin = "<!-- route table: generated from pkg/job's Routes by go test ./pkg/dispatcher -run TestRouteTableInAPIDoc -update; do not edit -->\n"
	routeTableEnd   = "<!-- end of route table -->\n"
)

// routeTable renders job.Routes() as docs/api.md lists them: how OllamaMax
// serves each route, the Ollama versions that have it, where a job's model
// comes from and which API key it needs.
func routeTable() string {
	var b strings.Builder
	b.WriteString("| route | API | OllamaMax | Ollama versions | model from | API key |\n|---|---|---|---|---|---|\n")
	for _, rt := range job.Routes() {
		api := map[job.API]string{job.Native: "native", job.OpenAI: "OpenAI", job.Anthropic: "Anthropic"}[rt.API]
		serve := map[job.Serving]string{job.Queued: "queued", job.Node: "node", job.Fleet: "fleet",
			job.Refused: "refused, 501", job.Removed: "removed: 404"}[rt.Serve]
		switch {
		case rt.Serve == job.Node && rt.Changes:
			serve = "fanned out"
		case rt.Serve == job.Node && rt.ModelField == "":
			serve = "node, any worker whose Ollama has it"
		}
		versions := "all"
		switch {
		case rt.Since != "" && rt.Until != "":
			versions = rt.Since + " to " + rt.Until
		case rt.Since != "":
			versions = rt.Since + "+"
		case rt.Until != "":
			versions = "before " + rt.Until
		}
		model := "-"
		switch {
		case rt.Form:
			model = "form field `" + rt.ModelField + "`"
		case rt.ModelField != "":
			model = "`" + rt.ModelField + "`"
		}
		key := "user"
		switch {
		case rt.Serve == job.Removed:
			key = "-"
		case publicRoutes[rt.Path]:
			key = "none"
		case rt.Admin:
			key = "admin"
		}
		method := rt.Method
		if rt.Head {
			method = "HEAD, " + method
		}
		fmt.Fprintf(&b, "| `%s %s` | %s | %s | %s | %s | %s |\n", method, rt.Path, api, serve, versions, model, key)
	}
	return b.String()
}

// TestRouteTableInAPIDoc: docs/api.md lists every route of the table, as
// the table says OllamaMax serves it; -update rewrites the list.
func TestRouteTableInAPIDoc(t *testing.T) {
	doc, err := os.ReadFile(routeDoc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, routeTableBegin), strings.Index(s, routeTableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no generated route table between %q and %q", routeDoc, routeTableBegin, routeTableEnd)
	}
	want := routeTable()
	if got := s[i+len(routeTableBegin) : j]; got != want {
		if *update {
			if err := os.WriteFile(routeDoc, []byte(s[:i+len(routeTableBegin)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s lists the routes otherwise than pkg/job's table; go test ./pkg/dispatcher -run TestRouteTableInAPIDoc -update rewrites it:\n%s", routeDoc, want)
	}
}
