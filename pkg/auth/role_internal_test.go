package auth

import (
	"slices"
	"strings"
	"testing"
)

// TestWorkerViaLeaf checks that the worker template allows each of its
// JetStream subjects also as a leaf node maps it to the cluster's domain,
// and nothing else in that form; the other roles connect to the cluster
// itself and get no such subject.
func TestWorkerViaLeaf(t *testing.T) {
	for _, r := range Roles {
		tpl, err := Template(r)
		if err != nil {
			t.Fatal(err)
		}
		pub := tpl.Pub.Allow
		var plain, leaf []string
		for _, s := range pub {
			switch {
			case strings.HasPrefix(s, "$JS.API."):
				plain = append(plain, "$JS.*.API."+strings.TrimPrefix(s, "$JS.API."))
			case strings.HasPrefix(s, "$KV."):
				plain = append(plain, "$JS.*.API."+s)
			case strings.HasPrefix(s, "$JS.*.API."):
				leaf = append(leaf, s)
			}
		}
		slices.Sort(plain)
		slices.Sort(leaf)
		if r != Worker {
			if len(leaf) > 0 {
				t.Errorf("%s: %v through a leaf node, want none", r, leaf)
			}
			continue
		}
		if len(plain) == 0 || !slices.Equal(leaf, plain) {
			t.Errorf("worker through a leaf node:\n got %v\nwant %v", leaf, plain)
		}
		for _, want := range []string{"$JS.*.API.CONSUMER.MSG.NEXT.OLLAMAQ_JOBS.*", "$JS.*.API.$KV.ollamaq_nodes.node." + name} {
			if !slices.Contains(pub, want) {
				t.Errorf("worker: no %s", want)
			}
		}
	}
}
