// Package clients_test drives the dispatcher with the client libraries people
// actually use — the official OpenAI Go SDK here, ollama-js and openai-node
// through the node test runner in e2e/ — and checks each against the same
// simulated Ollama reached directly. The simulator is deterministic, so the
// text through the queue must equal the text straight from it. Against a
// dispatcher that requires API keys, each library must raise its own error
// for a refused key, model or route and for a rate limit.
package clients_test

import (
	"testing"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/internal/ollamasim"
)

const (
	chatModel  = "llama3.2:latest"
	embedModel = "nomic-embed-text:latest"
)

// startFleet starts two workers with two slots each, in front of simulators
// serving a chat model and an embedding model, and waits until the
// dispatcher lists both models. o sets the rest: Auth for operator mode
// with role credentials, Keys for a dispatcher that requires API keys.
func startFleet(t *testing.T, o fleettest.Options) *fleettest.Fleet {
	t.Helper()
	sim := ollamasim.DefaultConfig()
	sim.Models = []ollamasim.Model{
		{Name: chatModel},
		{Name: embedModel, Capabilities: []string{"embedding"}},
	}
	sim.TokensPerSecond = 2000 // Paced, so streams arrive in several reads, but quickly.
	sim.TimeToFirstToken = -1
	o.Workers, o.Slots, o.Sim = 2, 2, sim
	f := fleettest.Start(t, o)
	f.WaitFor("both models to be listed", func() bool { return len(f.View.Models()) == 2 })
	return f
}
