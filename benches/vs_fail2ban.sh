#!/usr/bin/env bash
# Side by side: nightowl's rule engine against fail2ban-regex and SEC on the
# same 1M-line nginx access log, each detecting login brute force (the
# classic fail2ban job). Reports lines/s of wall time and of CPU time.
#
#   bash benches/vs_fail2ban.sh [LINES]
#
# Needs Debian's fail2ban and sec (installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-1000000}
WORK=$(mktemp -d /tmp/nightowl-vs-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if ! command -v fail2ban-regex >/dev/null || ! command -v sec >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fail2ban sec >/dev/null
fi
cargo build --release --quiet --bin nightowl --example gen_access_log
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/nightowl
LOG=$WORK/access.log
"$TARGET/release/examples/gen_access_log" "$LOG" "$LINES"
echo "input: $(wc -l <"$LOG") lines, $(du -m "$LOG" | cut -f1) MB"

# One rule each: >= 20 failed logins (401/403 on a login path) per client
# IP in 5 minutes.
mkdir -p "$WORK/one-rule"
cat >"$WORK/one-rule/brute.yaml" <<'YAML'
id: brute
title: Login brute force
severity: warning
match:
  all:
    - {field: status, equals: [401, 403]}
    - {field: path, regex: '/(login|signin|wp-login\.php)'}
detect: {kind: threshold, key: client_ip, window: 5m, count: 20}
YAML
# fail2ban cuts the matched timestamp out of the line before the regex runs.
cat >"$WORK/filter.conf" <<'CONF'
[Definition]
failregex = ^<HOST> \S+ \S+ .*"[A-Z]+ /(?:login|signin|wp-login\.php)[^"]*" 40[13] 
datepattern = %%d/%%b/%%Y:%%H:%%M:%%S %%z
CONF
cat >"$WORK/sec.conf" <<'CONF'
type=SingleWithThreshold
ptype=RegExp
pattern=^(\S+) \S+ \S+ \[[^\]]+\] "[A-Z]+ /(?:login|signin|wp-login\.php)[^"]*" 40[13] 
desc=brute force from $1
action=none
window=300
thresh=20
CONF

# measure NAME CMD...: wall seconds and user+sys CPU seconds of CMD.
measure() {
    local name=$1; shift
    local t0 t1 wall cpu
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
        echo "$name failed:"; tail -5 "$WORK/$name.err"; return 1; }
    t1=$(date +%s.%N)
    wall=$(echo "$t1 - $t0" | bc -l)
    cpu=$(awk '{print $1 + $2}' "$WORK/time")
    printf "%-34s wall %7.2f s  %10.0f lines/s   cpu %7.2f s  %10.0f lines/cpu-s\n" \
        "$name" "$wall" "$(echo "$LINES / $wall" | bc -l)" "$cpu" "$(echo "$LINES / $cpu" | bc -l)"
}

measure "fail2ban-regex (1 filter)" fail2ban-regex "$LOG" "$WORK/filter.conf"
measure "sec (1 threshold rule)" sec --conf="$WORK/sec.conf" --input="$LOG" --notail --fromstart --nolog --quiet
measure "nightowl rules run (1 rule)" "$BIN" rules run "$WORK/one-rule" --file "$LOG" --format combined
measure "nightowl rules run (default pack)" "$BIN" rules run rules --file "$LOG" --format combined
echo "nightowl firings (1 rule): $(wc -l <"$WORK/nightowl rules run (1 rule).out")"
grep -E "^(Lines|Failregex)" "$WORK/fail2ban-regex (1 filter).out" || true
