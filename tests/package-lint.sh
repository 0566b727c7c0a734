#!/usr/bin/env bash
# Package lint: lintian on target/debian/bulkhead_*.deb and rpmlint on
# target/generate-rpm/bulkhead-*.rpm (the newest of each, from `make deb rpm`), the checks a
# Debian and a Fedora reviewer run first. Prints every finding and a count per tag, then fails
# (exit 1) on:
#   - any lintian error or warning that packaging/debian/lintian-overrides does not override;
#   - an override there without a comment line right above it saying why, or one that no
#     longer matches anything (lintian's unused-override / mismatched-override);
#   - any rpmlint error or warning that packaging/rpm/bulkhead.rpmlintrc does not filter;
#   - a filter there without a comment line right above it, or one that matches nothing
#     (rpmlint's unused-rpmlintrc-filter).
# Needs lintian and rpmlint (Debian: apt-get install lintian rpmlint); `make package-lint`
# builds both packages first. `tests/package-lint.sh deb` (or `rpm`) lints one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C.UTF-8
WHICH=${1:-all}
case $WHICH in
deb | rpm | all) ;;
*)
    echo "package-lint: unknown argument '$WHICH': give deb, rpm or nothing (both)" >&2
    exit 2
    ;;
esac
want() { [ "$WHICH" = all ] || [ "$WHICH" = "$1" ]; }

OVERRIDES=packaging/debian/lintian-overrides
RPMLINTRC=packaging/rpm/bulkhead.rpmlintrc
failed=0

fail() {
    echo "package-lint: $*" >&2
    failed=1
}

tools=()
want deb && tools+=(lintian)
want rpm && tools+=(rpmlint)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "package-lint: $tool is not installed (Debian: apt-get install lintian rpmlint)" >&2
        exit 1
    }
done

newest() { # newest FILE...: the most recent of those that exist, or nothing
    ls -t -- "$@" 2>/dev/null | head -1 || true
}
DEB=$(newest target/debian/bulkhead_*.deb)
RPM=$(newest target/generate-rpm/bulkhead-*.rpm)
if want deb && [ -z "$DEB" ]; then
    echo "package-lint: no target/debian/bulkhead_*.deb: run make deb first" >&2
    exit 1
fi
if want rpm && [ -z "$RPM" ]; then
    echo "package-lint: no target/generate-rpm/bulkhead-*.rpm: run make rpm first" >&2
    exit 1
fi

# Every override or filter line needs the reason in a comment right above it.
uncommented() { # uncommented FILE IS_ENTRY_REGEX: prints "FILE:N: line" for each entry without one
    awk -v re="$2" -v file="$1" '
        /^[[:space:]]*#/ { commented = 1; next }
        /^[[:space:]]*$/ { commented = 0; next }
        $0 ~ re { if (!commented) print file ":" NR ": " $0; commented = 0; next }
        { commented = 0 }' "$1"
}
count_tags() {
    sort | uniq -c | sort -k1,1nr -k2 | sed 's/^/   /'
}

lint_deb() {
    local bad lint rc=0
    bad=$(uncommented "$OVERRIDES" '^bulkhead[[:space:]:]')
    [ -z "$bad" ] || fail "lintian overrides without a comment saying why:"$'\n'"$bad"

    echo "== lintian $(lintian --version | awk '{print $2}') on $DEB"
    # Judged by the tags printed, not the exit code: with --show-overrides, lintian counts
    # overridden tags for --fail-on too.
    lint=$(lintian --fail-on none --display-info --show-overrides "$DEB" 2>&1) || rc=$?
    [ -z "$lint" ] || printf '%s\n' "$lint" | sed 's/^/   /'
    echo "   by tag (E error, W warning, I info, O overridden; N: lines are the overrides' reasons):"
    printf '%s\n' "$lint" | sed -n 's/^\([EWIPXO]\): bulkhead[^:]*: \([^ ]*\).*/\1 \2/p' | count_tags
    [ "$rc" = 0 ] || fail "lintian failed (exit $rc)"
    if grep -qE '^[EW]: ' <<<"$lint"; then
        fail "lintian found errors or warnings that are not overridden (E:/W: lines above)"
    fi
    if grep -qE '^[EWI]: [^ ]+: (unused-override|mismatched-override)' <<<"$lint"; then
        fail "$OVERRIDES has an override that matches nothing: drop or fix it"
    fi
}

lint_rpm() {
    local bad lint summary errors warnings rc=0
    bad=$(uncommented "$RPMLINTRC" '^[[:space:]]*addFilter')
    [ -z "$bad" ] || fail "rpmlint filters without a comment saying why:"$'\n'"$bad"
    echo "== rpmlint $(rpmlint --version 2>&1 | tail -1) on $RPM"
    lint=$(rpmlint --rpmlintrc "$RPMLINTRC" "$RPM" 2>&1) || rc=$?
    printf '%s\n' "$lint" | sed 's/^/   /'
    echo "   by tag (E error, W warning):"
    printf '%s\n' "$lint" | sed -n 's/^[^ ]*: \([EW]\): \([^ ]*\).*/\1 \2/p' | count_tags
    summary=$(grep -E '[0-9]+ errors?, [0-9]+ warnings?' <<<"$lint" | tail -1)
    errors=$(sed -n 's/.* \([0-9]*\) errors\{0,1\},.*/\1/p' <<<"$summary")
    warnings=$(sed -n 's/.* \([0-9]*\) warnings\{0,1\},.*/\1/p' <<<"$summary")
    if [ -z "$errors" ] || [ -z "$warnings" ]; then
        fail "rpmlint printed no summary line (exit $rc)"
    elif [ "$errors" != 0 ] || [ "$warnings" != 0 ] || [ "$rc" != 0 ]; then
        fail "rpmlint: $errors errors, $warnings warnings not filtered by $RPMLINTRC (exit $rc)"
    fi
}

want deb && lint_deb
want rpm && lint_rpm

if [ "$failed" != 0 ]; then
    echo "package-lint: FAILED" >&2
    exit 1
fi
echo "package-lint: OK ($WHICH: no error, no warning without an override or filter that says why)"
