#!/usr/bin/env bash
# Runs each fuzzer for FUZZTIME. Usage: scripts/fuzz.sh FUZZTIME pkg:Fuzzer...
#
# scripts/fuzz.sh build pkg:Fuzzer... only compiles: each package once,
# with the fuzzing instrumentation (go test -c -fuzz), which every
# dependency gets too, so the build is a new one even when the tests'
# build is cached (about 100 s for ./fsm on an empty cache, 2 s for its
# second fuzzer). The fuzz runs then find it in the Go build cache. CI
# runs it while the CPU has room (.ci/run).
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# when -fuzztime ends while a worker is mid-run (go.dev/issue/75804, fixed
# in Go 1.27): no input failed and none is written. Such a run is tried
# again, twice at most; any other failure, and above all one that writes a
# failing input, fails at once.
set -uo pipefail
fuzztime=$1
shift
GO=${GO:-go}
if [ "$fuzztime" = build ]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
	built=" "
	for f in "$@"; do
		pkg=${f%%:*}
		name=${f##*:}
		case "$built" in *" $pkg "*) continue ;; esac
		built="$built$pkg "
		echo "fuzz build $pkg (for $name)"
		$GO test -c -fuzz "^$name\$" -o "$out/" "$pkg" || exit
	done
	exit 0
fi
for f in "$@"; do
	pkg=${f%%:*}
	name=${f##*:}
	for try in 1 2 3; do
		echo "fuzz $pkg $name for $fuzztime"
		out=$(mktemp)
		$GO test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel 2 "$pkg" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		if [ "$rc" -eq 0 ]; then
			rm -f "$out"
			break
		fi
		if grep -q 'context deadline exceeded' "$out" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$out" && [ "$try" -lt 3 ]; then
			echo "fuzz $pkg $name: the fuzz engine's deadline race (no failing input); trying again"
			rm -f "$out"
			continue
		fi
		rm -f "$out"
		exit "$rc"
	done
done
