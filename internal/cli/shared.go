package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Reloadable is a setting a reload applies: a flag of the dispatcher or
// the worker, named by its flag or its environment variable.
type Reloadable struct {
	Flag, Env string
	// Shared says the shared settings may set it; files (certificates)
	// belong to one machine.
	Shared bool
	// Kind is how its value parses: "duration", "int", "level", "labels"
	// or "string".
	Kind string
}

// The settings a reload applies, by command; each command's flags hold the
// same (cmd/dispatcher and cmd/worker tests check it).
var (
	DispatcherReloadable = []Reloadable{
		{"log-level", "OLLAMAMAX_LOG_LEVEL", true, "level"},
		{"origins", "OLLAMA_ORIGINS", true, "string"},
		{"max-body", "OLLAMAMAX_MAX_BODY", true, "int"},
		{"body-budget", "OLLAMAMAX_BODY_BUDGET", true, "int"},
		{"queue-wait", "OLLAMAMAX_QUEUE_WAIT", true, "duration"},
		{"max-queued", "OLLAMAMAX_MAX_QUEUED", true, "int"},
		{"queue-full-wait", "OLLAMAMAX_QUEUE_FULL_WAIT", true, "duration"},
		{"tenant-window", "OLLAMAMAX_TENANT_WINDOW", true, "duration"},
		{"tenant-held", "OLLAMAMAX_TENANT_HELD", true, "int"},
		{"stall", "OLLAMAMAX_STALL", true, "duration"},
		{"max-silence", "OLLAMAMAX_MAX_SILENCE", true, "duration"},
		{"tls-cert", "OLLAMAMAX_TLS_CERT", false, "string"},
		{"tls-key", "OLLAMAMAX_TLS_KEY", false, "string"},
	}
	WorkerReloadable = []Reloadable{
		{"log-level", "OLLAMAMAX_LOG_LEVEL", true, "level"},
		{"slots", "OLLAMA_NUM_PARALLEL", true, "int"},
		{"interactive-reserve", "OLLAMAMAX_INTERACTIVE_RESERVE", true, "int"},
		{"label", "OLLAMAMAX_WORKER_LABELS", true, "labels"},
		{"grace", "OLLAMAMAX_GRACE", true, "duration"},
	}
)

// Find returns the setting of rs that name is (its flag, with or without
// dashes, or its variable), or nil.
func Find(rs []Reloadable, name string) *Reloadable {
	name = strings.TrimLeft(name, "-")
	for i, r := range rs {
		if r.Flag == name || r.Env == name {
			return &rs[i]
		}
	}
	return nil
}

// Check reports whether value parses as r's.
func (r Reloadable) Check(value string) error {
	var err error
	switch r.Kind {
	case "duration":
		_, err = time.ParseDuration(value)
	case "int":
		_, err = strconv.ParseInt(value, 0, 64)
	case "level":
		_, err = ParseLevel(value)
	case "labels":
		for kv := range strings.SplitSeq(value, ",") {
			if k, _, ok := strings.Cut(strings.TrimSpace(kv), "="); strings.TrimSpace(kv) != "" && (!ok || k == "") {
				err = fmt.Errorf("label %q is not key=value", kv)
			}
		}
	}
	return err
}

// CheckShared checks text as shared settings for a command whose reloadable
// settings are rs: its form, that it names only settings the shared
// settings may hold, and that their values parse. A value may still be
// out of a setting's bounds (queue-wait=10ms): the processes refuse that
// when they apply it, and log why.
func CheckShared(text string, rs []Reloadable) error {
	settings, err := ParseSettings(text)
	if err != nil {
		return err
	}
	for _, s := range settings {
		r := Find(rs, s.Name)
		switch {
		case r == nil:
			var names []string
			for _, r := range rs {
				if r.Shared {
					names = append(names, r.Flag)
				}
			}
			return fmt.Errorf("line %d: %q cannot be shared: the shared settings may hold %s", s.Line, s.Name, strings.Join(names, ", "))
		case !r.Shared:
			return fmt.Errorf("line %d: %s names a file of each machine: set it in that machine's configuration file", s.Line, r.Flag)
		}
		if err := r.Check(s.Value); err != nil {
			return fmt.Errorf("line %d: %s=%q: %w", s.Line, r.Flag, s.Value, err)
		}
	}
	return nil
}
