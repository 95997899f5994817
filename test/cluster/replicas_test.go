package cluster_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/streams"
)

// TestStreamsReplicated starts a fleet on the three-node cluster in both auth
// modes and checks that every stream and KV bucket of streams/*.json came up
// from its file with three replicas, one on each node, all current, and that
// the consumers (a model's, from consumer.json, and the reaper's) are
// replicated with their stream.
func TestStreamsReplicated(t *testing.T) {
	defs := definitions(t)
	for _, mode := range fleettest.AuthModes {
		t.Run(mode.Name, func(t *testing.T) {
			f := fleettest.Start(t, fleettest.Options{Cluster: true, Workers: 1, Auth: mode.Auth})
			// A model's consumer exists once a worker served the model.
			if a := generate(t.Context(), f.URL, "hello", 5); a.status != 200 || a.done != 1 {
				t.Fatalf("generate: %d %s", a.status, a.err)
			}
			var nodes []string
			for _, n := range f.Cluster.Nodes() {
				nodes = append(nodes, n.Name)
			}
			js := f.Queue.JetStream()
			for _, def := range defs {
				var info *jetstream.StreamInfo
				f.WaitFor(def.Name+" with every replica current", func() bool {
					ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
					defer cancel()
					s, err := js.Stream(ctx, def.Name)
					if err != nil {
						return false
					}
					info = s.CachedInfo()
					return replicated(info.Cluster, nodes) == ""
				})
				got := info.Config
				if got.Replicas != 3 {
					t.Errorf("%s: %d replicas, want 3", def.Name, got.Replicas)
				}
				if !slices.Equal(got.Subjects, def.Subjects) || got.Storage != def.Storage || got.Retention != def.Retention {
					t.Errorf("%s: subjects %v, storage %v, retention %v; want %v, %v, %v as in streams/",
						def.Name, got.Subjects, got.Storage, got.Retention, def.Subjects, def.Storage, def.Retention)
				}
			}
			for _, c := range []struct{ stream, consumer string }{
				{job.Stream, job.ConsumerName(model+":latest", job.Interactive)},
				{job.AdvisoryStream, "reaper"},
			} {
				f.WaitFor("consumer "+c.consumer+" with every replica current", func() bool {
					// A consumer's leader answers for it: while one is
					// elected nobody does, so ask again soon.
					ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
					defer cancel()
					cons, err := js.Consumer(ctx, c.stream, c.consumer)
					return err == nil && replicated(cons.CachedInfo().Cluster, nodes) == ""
				})
			}
		})
	}
}

// replicated tells how placement ci differs from one replica on each of
// nodes, all current, or returns "".
func replicated(ci *jetstream.ClusterInfo, nodes []string) string {
	if ci == nil || ci.Leader == "" {
		return "no leader"
	}
	peers := []string{ci.Leader}
	for _, r := range ci.Replicas {
		if !r.Current || r.Offline {
			return r.Name + " not current"
		}
		peers = append(peers, r.Name)
	}
	slices.Sort(peers)
	if !slices.Equal(peers, nodes) {
		return "on " + strings.Join(peers, ",")
	}
	return ""
}

// definitions are the streams of streams/*.json (the files with a stream
// name; the others are consumers).
func definitions(t *testing.T) []jetstream.StreamConfig {
	t.Helper()
	files, err := fs.Glob(streams.FS, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	var defs []jetstream.StreamConfig
	for _, name := range files {
		b, err := streams.FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var cfg jetstream.StreamConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg.Name != "" {
			defs = append(defs, cfg)
		}
	}
	if len(defs) < 9 {
		t.Fatalf("%d stream definitions in streams/, want the 9 queue.Setup applies", len(defs))
	}
	return defs
}
