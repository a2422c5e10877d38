#!/usr/bin/env bash
# make sanitize: the test suite (unit tests and the FUSE mount tests, which start the vdiskfs binary
# of VDISKFS_BIN) built and run under each sanitizer of SANITIZERS ("address thread"), each in its
# own build folder (.build-asan, .build-tsan), so the tests and the daemon they mount with are the
# same sanitized build.
#
#   SANITIZERS="address thread"   which runs (address = ASan + LeakSanitizer, thread = TSan)
#   SANITIZE_FILTER=<regex>        passed to `swift test --filter` (a subset for CI)
#   SANITIZE_SKIP=<regex>          passed to `swift test --skip`
#   SANITIZE_BUILD_ONLY=1          build, run nothing (`make test` builds while the plain suite runs)
#
# A report anywhere fails the run, including one from a daemon that runs detached after mounting
# (its stderr is /dev/null): every sanitized process writes its reports to a file in a fresh folder
# (log_path=), and any file there fails the run and is printed. ASan stops at the first error
# (halt_on_error=1, as always for ASan); TSan goes on and exits 66 at the end so one run collects
# every race. Suppressions, one report each with the reason, live in scripts/sanitizers/*.supp.
#
# Under TSan, `Mutex` is a pthread mutex (-DVDISKFS_TSAN; Sources/VDiskCore/TSanMutex.swift
# says why): every module that uses `Mutex` must declare the shadowing alias, checked below.
set -uo pipefail

# All in a function: bash then reads the whole script before running it, so editing this file
# while a (long) run goes on cannot change what that run executes.
main() {

  SWIFT=${SWIFT:-swift}
  SANITIZERS=${SANITIZERS:-address thread}
  FILTER=${SANITIZE_FILTER:-}
  SKIP=${SANITIZE_SKIP:-}
  BUILD_ONLY=${SANITIZE_BUILD_ONLY:-}
  TIME_SCALE=${VDISKFS_TEST_TIME_SCALE:-}
  root=$(cd "$(dirname "$0")/.." && pwd)
  supp=$root/scripts/sanitizers
  cd "$root" || exit 1

  # Every module folder whose code uses Mutex has TSanMutex.swift (else TSan would see an
  # uninstrumented lock there and report false races, or worse, we would suppress real ones).
  missing=()
  for dir in Sources/*/ Sources/Formats/*/ Sources/Stores/*/ Tests/*/; do
    [ "$dir" = Sources/Formats/ ] || [ "$dir" = Sources/Stores/ ] && continue
    if grep -lqE '\bMutex(<|\()' "$dir"*.swift 2>/dev/null && [ ! -e "${dir}TSanMutex.swift" ]; then
      missing+=("$dir")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "sanitize: these modules use Mutex but have no TSanMutex.swift alias: ${missing[*]}" >&2
    exit 1
  fi

  summary=()
  status=0
  for sanitizer in $SANITIZERS; do
    case $sanitizer in
      address) scratch=.build-asan; extra=(); scale=10 ;;
      thread) scratch=.build-tsan; extra=(-Xswiftc -DVDISKFS_TSAN); scale=20 ;;
      *) echo "sanitize: unknown sanitizer '$sanitizer' (address, thread)" >&2; exit 2 ;;
    esac
    flags=(--sanitize="$sanitizer" --scratch-path "$scratch" "${extra[@]}")
    echo "== $sanitizer: building ($scratch)"
    start=$SECONDS
    if ! $SWIFT build --build-tests "${flags[@]}"; then
      echo "sanitize: $sanitizer build failed" >&2
      exit 1
    fi
    build_seconds=$((SECONDS - start))
    if [ -n "$BUILD_ONLY" ]; then
      summary+=("$sanitizer: build ${build_seconds} s")
      continue
    fi
    bin=$($SWIFT build --show-bin-path "${flags[@]}")

    reports=$(mktemp -d "/tmp/vdiskfs-sanitize-$sanitizer.XXXXXX")
    log=$reports/test-output.txt
    # handle_sigill/sigtrap/abort: a Swift runtime trap (ud2, SIGILL) in a detached daemon would
    # otherwise end it with no trace at all; the sanitizer reports it with a stack.
    options="log_path=$reports/report:print_suppressions=0:handle_sigill=1:handle_sigtrap=1:handle_abort=1"
    asan_supp=$([ -s "$supp/asan.supp" ] && echo ":suppressions=$supp/asan.supp")
    lsan_supp=$([ -s "$supp/lsan.supp" ] && echo ":suppressions=$supp/lsan.supp")
    tsan_supp=$([ -s "$supp/tsan.supp" ] && echo ":suppressions=$supp/tsan.supp")
    export ASAN_OPTIONS="$options:halt_on_error=1:detect_leaks=1$asan_supp"
    export LSAN_OPTIONS="print_suppressions=0$lsan_supp"
    export TSAN_OPTIONS="$options:halt_on_error=0:exitcode=66:second_deadlock_stack=1$tsan_supp"
    # The runtime's crash handler would take SIGSEGV from the sanitizer's; let the sanitizer report.
    export SWIFT_BACKTRACE=enable=no
    # Tests' wall-clock budgets of bounded work (Tests/Fixtures/TimeBudget.swift): ASan makes code
    # about 2-3x slower, TSan 5-15x, and a busy 2-core machine more.
    export VDISKFS_TEST_TIME_SCALE=${TIME_SCALE:-$scale}

    echo "== $sanitizer: testing${FILTER:+ --filter $FILTER}${SKIP:+ --skip $SKIP} (reports in $reports)"
    start=$SECONDS
    VDISKFS_BIN=$bin/vdiskfs $SWIFT test --skip-build "${flags[@]}" \
      ${FILTER:+--filter "$FILTER"} ${SKIP:+--skip "$SKIP"} --xunit-output "$reports/xunit.xml" 2>&1 | tee "$log"
    test_status=${PIPESTATUS[0]}
    test_seconds=$((SECONDS - start))
    unset ASAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS SWIFT_BACKTRACE

    result=passed
    if [ "$test_status" != 0 ]; then result="tests failed ($test_status)"; status=1; fi
    if [ -n "${CI:-}" ] && grep -Eq '(Test .* skipped|[1-9][0-9]* tests? skipped)' "$log"; then
      echo "sanitize: tests were skipped under CI; every test must run here"
      result="tests skipped"; status=1
    fi
    found=$(find "$reports" -name 'report.*' -type f | sort)
    if [ -n "$found" ]; then
      for f in $found; do
        echo "---- $sanitizer report $f"
        cat "$f"
      done
      result="$(echo "$found" | wc -l) report file(s) in $reports"; status=1
    fi
    left=$(awk '$3 ~ /^fuse/ && $2 ~ /vdiskfs-/ {print $2}' /proc/mounts)
    if [ -n "$left" ]; then echo "sanitize: mounts left behind: $left"; result="mounts left behind"; status=1; fi

    # Slowest suites: the test cases' own durations summed per suite (tests of different suites
    # overlap in time, so the sums show cost, not wall time).
    slowest=$(cat "$reports"/xunit*.xml 2>/dev/null \
      | grep -o '<testcase classname="[^"]*" name="[^"]*" time="[0-9.]*"' \
      | sed -E 's/.*classname="([^"]*)".*time="([0-9.]*)"/\1 \2/' \
      | awk '{t[$1] += $2} END {for (s in t) printf "%8.1f s  %s\n", t[s], s}' | sort -rn | head -12)
    summary+=("$sanitizer: build ${build_seconds} s, tests ${test_seconds} s, $result"$'\n'"$slowest")
    # A passed run leaves nothing behind; a failed one keeps its reports and output.
    [ "$result" = passed ] && rm -rf "$reports"
  done

  echo
  echo "== sanitize summary"
  printf '%s\n' "${summary[@]}"
  return $status
}

main "$@"; exit  # on one line: bash reads no further, so an edit during a run cannot break it
