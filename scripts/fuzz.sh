#!/usr/bin/env bash
# Runs every fuzz target of the repository for FUZZTIME each (make fuzz).
# A finding fails the run. Go 1.26's fuzz coordinator can also fail a
# target with a bare "context deadline exceeded" as -fuzztime runs out,
# writing no input (go.dev/issue/75804, fixed in Go 1.27): such a target
# is run once more, and a second such ending is reported and passed over.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}

race() { # race OUT: the coordinator's deadline race, not a finding?
  grep -q 'context deadline exceeded' <<<"$1" && ! grep -q 'Failing input written to' <<<"$1"
}

for dir in $(grep -l '^func Fuzz' $(git ls-files '*_test.go') | xargs -n1 dirname | sort -u); do
  for f in $(grep -h -o '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | cut -c6-); do
    echo "fuzz ./$dir $f $FUZZTIME"
    for try in 1 2; do
      if out=$("$GO" test "./$dir" -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" 2>&1); then
        break
      fi
      if ! race "$out"; then
        echo "$out"
        exit 1
      fi
      if [ "$try" = 2 ]; then
        echo "fuzz: $f ended twice with Go's fuzztime deadline race (go.dev/issue/75804), no input written: passed over"
      else
        echo "fuzz: $f ended with Go's fuzztime deadline race (go.dev/issue/75804), no input written: once more"
      fi
    done
    echo "$out" | tail -1
  done
done
