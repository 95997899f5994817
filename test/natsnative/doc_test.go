package natsnative_test

import (
	"context"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/internal/fleettest"
)

// TestProtocolDocExample runs the Go example of docs/protocol.md against a
// fleet, and checks that the document shows exactly the code that ran and
// that the code needs nothing of this module but the protocol package.
func TestProtocolDocExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	code := between(t, string(src), "// example:begin\n", "// example:end\n")
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	shown := between(t, string(doc), "<!-- go-example:begin -->\n```go\n", "```\n<!-- go-example:end -->")
	if shown != code {
		t.Errorf("docs/protocol.md's Go example differs from test/natsnative/example_test.go; copy the code between the markers:\n%s", code)
	}

	f, err := parser.ParseFile(token.NewFileSet(), "example_test.go", src, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		switch {
		case !strings.Contains(path, "."): // The standard library.
		case path == "github.com/nats-io/nats.go", path == "github.com/nats-io/nats.go/jetstream", path == "github.com/ollamamax/ollamamax/pkg/job":
		default:
			t.Errorf("the example imports %s; it may use only the standard library, nats.go and pkg/job", path)
		}
	}

	fl := fleettest.Start(t, fleettest.Options{Workers: 1})
	nc, err := nats.Connect(fl.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	answer, err := generate(ctx, nc, "gopher", "llama3.2", "Hello from Go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(answer) == "" {
		t.Fatal("empty answer")
	}
}

func between(t *testing.T, s, begin, end string) string {
	t.Helper()
	_, rest, ok := strings.Cut(s, begin)
	if !ok {
		t.Fatalf("no %q", begin)
	}
	mid, _, ok := strings.Cut(rest, end)
	if !ok {
		t.Fatalf("no %q", end)
	}
	return mid
}
