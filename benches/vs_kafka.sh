#!/usr/bin/env bash
# Embedded collector against the Kafka scale-out path, on one machine:
#
#   embedded  collector alone (WAL, local index)
#   kafka1    collector --kafka -> tansu -> 1 nightowl indexer
#   kafka2    collector --kafka -> tansu -> 2 nightowl indexers
#
# For LINES generated access-log lines shipped by `nightowl bench` (real TLS,
# 2 connections, the agent protocol) it reports, per run:
#   - lines/s acked by the collector (the bench's own rate);
#   - lines/s until every line is searchable: LINES over the time from the
#     bench's first send to `count(*) == LINES`, counted through the
#     collector's fan-out ([cluster] peers = the indexers);
#   - CPU seconds (utime+stime from /proc/PID/stat) each process spent from
#     just before the bench to that moment, its peak RSS (VmHWM), and the CPU
#     the rest of the machine spent in the same window (the load of others).
#
#   bash benches/vs_kafka.sh [LINES] [REPEATS]
#
# Env: NIGHTOWL_BIN (default: build target/release/nightowl), TANSU (default
# /opt/tansu/bin/tansu), MODES (default "embedded kafka1 kafka2"), REKEY
# (default true: `[kafka] rekey` of the indexers, which run the default
# rule pack; the run then prints the rekey topic's traffic beside the lines
# topic's), KAFKA_EXTRA (more lines for the indexers' [kafka], e.g.
# 'rekey_except = ["web-traffic-spike-host"]'), KEEP=1 keeps the temp dir. Every process is started here and stopped on exit.
# Results and how to read them: docs/kafka-bench.md.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-1000000}
REPEATS=${2:-1}
MODES=${MODES:-embedded kafka1 kafka2}
REKEY=${REKEY:-true}
TANSU=${TANSU:-/opt/tansu/bin/tansu}
PARTITIONS=4
if [ -z "${NIGHTOWL_BIN:-}" ]; then
    cargo build --release --quiet --bin nightowl
    NIGHTOWL_BIN=${CARGO_TARGET_DIR:-target}/release/nightowl
fi
BIN=$(realpath "$NIGHTOWL_BIN")
[ -x "$TANSU" ] || { echo "tansu not found at $TANSU (set TANSU)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/nightowl-vs-kafka-XXXXXX)
TICK=$(getconf CLK_TCK)
PIDS=()

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_all
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
# cpu_ticks PID: utime+stime; field 2 (comm) has no spaces for our binaries.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_mb() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# Thread sampler: every 0.2 s reads /proc/PID/task/*/stat of the given
# processes; on SIGTERM prints, per process, the CPU of its threads grouped
# by name (trailing numbers dropped, so a pool adds up). Sampling, because
# tantivy starts new indexing threads at every commit: a before/after
# snapshot would miss them. A thread living less than 0.2 s is partly missed.
SAMPLER='
import glob, re, signal, sys, time
tick = float(sys.argv[1]); procs = sys.argv[2:]
seen = {}  # (pid, tid) -> [name, first, last]
def sample(first):
    for i in range(0, len(procs), 2):
        pid = procs[i + 1]
        for path in glob.glob("/proc/%s/task/*/stat" % pid):
            try:
                stat = open(path).read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            f = stat[stat.rindex(")") + 2:].split()
            t = int(f[11]) + int(f[12])
            key = (pid, path.split("/")[4])
            if key not in seen:
                seen[key] = [name, t if first else 0, t]
            seen[key][2] = t
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
sample(True)
while not stop:
    time.sleep(0.2)
    sample(False)
for i in range(0, len(procs), 2):
    groups = {}
    for (pid, _), (name, first, last) in seen.items():
        if pid == procs[i + 1]:
            g = re.sub(r"[-_:#]*[0-9]+$", "", name)
            groups[g] = groups.get(g, 0) + last - first
    total = sum(groups.values())
    top = sorted(groups.items(), key=lambda kv: -kv[1])
    shown = [kv for j, kv in enumerate(top) if j < 3 or kv[1] >= 0.05 * total]
    print(procs[i], ", ".join("%s %.1f" % (k, v / tick) for k, v in shown if v > 0))
'
# Busy ticks of the whole machine (user nice system irq softirq steal).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# wait_ready NAME STDOUT PID: the process printed `nightowl: ready`.
wait_ready() {
    local deadline=$((SECONDS + 120))
    until grep -qx 'nightowl: ready' "$2" 2>/dev/null; do
        if ! kill -0 "$3" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "$1 never became ready:" >&2
            tail -20 "${2%.out}.err" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# count URL: count(*) through that node (its fan-out when it has peers).
count() {
    curl -sg --max-time 10 --cacert "$CA" -H "Authorization: Bearer $(cat "$TOKEN")" \
        "$1/api/v1/count?q=*" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", -1))' \
        2>/dev/null || echo -1
}

assigned() {
    curl -s --max-time 5 --cacert "$CA" "$1/metrics" |
        awk '/^nightowl_kafka_partitions_assigned / {print $2}' || true
}

# start NAME CMD...: runs CMD in the background with its output in $RUN.
start() {
    local name=$1; shift
    "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" &
    PIDS+=("$!")
    eval "PID_$name=$!"
}

run_once() {
    local mode=$1 rep=$2 indexers=0
    case $mode in
        embedded) indexers=0 ;;
        kafka1) indexers=1 ;;
        kafka2) indexers=2 ;;
        *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
    RUN=$WORK/$mode-$rep
    mkdir -p "$RUN/collector" "$RUN/broker"
    local agent_port api_port broker_port i
    agent_port=$(free_port); api_port=$(free_port)
    local api_ports=() peers=""
    for ((i = 0; i < indexers; i++)); do
        api_ports+=("$(free_port)")
        peers+="${peers:+, }\"https://127.0.0.1:${api_ports[$i]}\""
    done
    local names=(collector)
    {
        echo "agent_listen = \"127.0.0.1:$agent_port\""
        echo "api_listen = \"127.0.0.1:$api_port\""
    } >"$RUN/collector.toml"
    if [ "$indexers" -gt 0 ]; then
        broker_port=$(free_port)
        local url=tcp://127.0.0.1:$broker_port
        # tansu reads flags from env vars and a .env file: clean env, empty dir.
        (cd "$RUN/broker" && exec env -u STORAGE_ENGINE -u LISTENER_URL \
            -u ADVERTISED_LISTENER_URL -u CLUSTER_ID "$TANSU" broker \
            --storage-engine memory://tansu/ --listener-url "$url" \
            --advertised-listener-url "$url") >"$RUN/broker.out" 2>"$RUN/broker.err" &
        PIDS+=("$!"); PID_broker=$!
        names+=(broker)
        for _ in $(seq 100); do
            ss -ltn "sport = :$broker_port" | grep -q LISTEN && break; sleep 0.1
        done
        cat >>"$RUN/collector.toml" <<TOML

[kafka]
brokers = "127.0.0.1:$broker_port"
partitions = $PARTITIONS

[cluster]
peers = [$peers]
TOML
    fi
    start collector "$BIN" collector --data-dir "$RUN/collector/data" --config "$RUN/collector.toml"
    wait_ready collector "$RUN/collector.out" "$PID_collector"
    CA=$RUN/collector/data/tls/ca.pem
    TOKEN=$RUN/collector/data/admin.token
    for ((i = 0; i < indexers; i++)); do
        local d=$RUN/indexer$i/data
        mkdir -p "$d"
        cp -r "$RUN/collector/data/tls" "$d/tls"
        for f in tokens.json admin.token tenants.json; do
            if [ -e "$RUN/collector/data/$f" ]; then cp -p "$RUN/collector/data/$f" "$d/$f"; fi
        done
        printf '[kafka]\nbrokers = "127.0.0.1:%s"\npartitions = %s\nrekey = %s\n%s\n' \
            "$broker_port" "$PARTITIONS" "$REKEY" "${KAFKA_EXTRA:-}" >"$RUN/indexer$i.toml"
        start "indexer$i" "$BIN" indexer --data-dir "$d" --config "$RUN/indexer$i.toml" \
            --api-listen "127.0.0.1:${api_ports[$i]}"
        names+=("indexer$i")
    done
    for ((i = 0; i < indexers; i++)); do
        local pid_var=PID_indexer$i
        wait_ready "indexer$i" "$RUN/indexer$i.out" "${!pid_var}"
    done
    # Start on a settled group: every partition owned, each indexer a share.
    if [ "$indexers" -gt 0 ]; then
        local deadline=$((SECONDS + 60)) ok=0
        while [ $SECONDS -lt $deadline ]; do
            local total=0 each=1 a
            for ((i = 0; i < indexers; i++)); do
                a=$(assigned "https://127.0.0.1:${api_ports[$i]}"); a=${a:-0}
                total=$((total + a)); [ "$a" -gt 0 ] || each=0
            done
            if [ "$total" -eq "$PARTITIONS" ] && [ "$each" -eq 1 ]; then ok=1; break; fi
            sleep 0.2
        done
        [ "$ok" -eq 1 ] || { echo "$mode: the group never split the $PARTITIONS partitions" >&2; exit 1; }
        sleep 1
    fi

    local name pid_var
    declare -A cpu0
    local sampler_args=()
    for name in "${names[@]}"; do
        pid_var=PID_$name; cpu0[$name]=$(cpu_ticks "${!pid_var}")
        sampler_args+=("$name" "${!pid_var}")
    done
    python3 -c "$SAMPLER" "$TICK" "${sampler_args[@]}" >"$RUN/threads.txt" &
    local sampler=$!
    PIDS+=("$sampler")
    local machine0 load0 window0
    machine0=$(machine_ticks); load0=$(cut -d' ' -f1-3 /proc/loadavg); window0=$(now)
    /usr/bin/time -f "%U %S %M" -o "$RUN/bench.time" \
        "$BIN" bench --collector "127.0.0.1:$agent_port" --ca "$CA" --token-file "$TOKEN" \
        --lines "$LINES" --connections 2 >"$RUN/bench.out" 2>"$RUN/bench.err" ||
        { echo "$mode: bench failed:" >&2; tail -5 "$RUN/bench.err" >&2; exit 1; }
    local bench_end elapsed
    bench_end=$(now)
    declare -A cpu1
    for name in "${names[@]}"; do pid_var=PID_$name; cpu1[$name]=$(cpu_ticks "${!pid_var}"); done
    elapsed=$(sed -n 's/.* elapsed=\([0-9.]*\)s .*/\1/p' "$RUN/bench.out")
    local c deadline=$((SECONDS + 900)) done_at=""
    while [ $SECONDS -lt $deadline ]; do
        c=$(count "https://127.0.0.1:$api_port")
        if [ "$c" = "$LINES" ]; then done_at=$(now); break; fi
        sleep 0.2
    done
    [ -n "$done_at" ] || { echo "$mode: count stuck at $c of $LINES" >&2; exit 1; }
    local sampler_cpu
    sampler_cpu=$(echo "$(cpu_ticks "$sampler") / $TICK" | bc -l)
    kill -TERM "$sampler"; wait "$sampler" || true
    local machine1 load1
    machine1=$(machine_ticks); load1=$(cut -d' ' -f1-3 /proc/loadavg)
    local searchable ours=0 bench_cpu
    searchable=$(echo "$done_at - $bench_end + $elapsed" | bc -l)
    bench_cpu=$(awk '{print $1 + $2}' "$RUN/bench.time")
    printf '%-9s #%s  acked %8.0f lines/s (%.2f s)  searchable %8.0f lines/s (%.2f s)  load %s -> %s\n' \
        "$mode" "$rep" "$(echo "$LINES / $elapsed" | bc -l)" "$elapsed" \
        "$(echo "$LINES / $searchable" | bc -l)" "$searchable" "$load0" "$load1"
    printf '    %-10s cpu %6.2f s                        peak rss %5s MB\n' bench "$bench_cpu" \
        "$(awk '{printf "%.0f", $3 / 1024}' "$RUN/bench.time")"
    for name in "${names[@]}"; do
        pid_var=PID_$name
        local t
        t=$(( $(cpu_ticks "${!pid_var}") - ${cpu0[$name]} ))
        ours=$((ours + t))
        printf '    %-10s cpu %6.2f s (%6.2f s until acked)  peak rss %5s MB\n' "$name" \
            "$(echo "$t / $TICK" | bc -l)" \
            "$(echo "(${cpu1[$name]} - ${cpu0[$name]}) / $TICK" | bc -l)" "$(peak_rss_mb "${!pid_var}")"
        if [ "$t" -gt "$TICK" ]; then
            echo "               threads: $(sed -n "s/^$name //p" "$RUN/threads.txt")"
        fi
    done
    local window_cpu window
    window_cpu=$(echo "($machine1 - $machine0) / $TICK" | bc -l)
    window=$(echo "$done_at - $window0" | bc -l)
    printf '    %-10s cpu %6.2f s  (machine busy %.2f s of %.2f s wall x %s cores; thread sampler %.2f s of it)\n' \
        "others" "$(echo "$window_cpu - $ours / $TICK - $bench_cpu" | bc -l)" "$window_cpu" \
        "$window" "$(nproc)" "$sampler_cpu"
    echo "    bench: $(cat "$RUN/bench.out")"
    if [ "$indexers" -gt 0 ]; then
        local m traffic=""
        for m in lines_records lines_bytes rekey_records rekey_bytes; do
            local sum=0 v
            for ((i = 0; i < indexers; i++)); do
                v=$(curl -s --max-time 5 --cacert "$CA" "https://127.0.0.1:${api_ports[$i]}/metrics" |
                    awk "/^nightowl_kafka_${m}_total / {print \$2}")
                sum=$(echo "$sum + ${v:-0}" | bc -l)
            done
            traffic+=" $m=$sum"
        done
        echo "    kafka (rekey=$REKEY):$traffic"
    fi
    stop_all
    unset cpu0 cpu1
}

echo "nightowl $("$BIN" --version 2>/dev/null | awk '{print $2}'), tansu $("$TANSU" --version 2>/dev/null | awk '{print $2}'), $LINES lines, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((rep = 1; rep <= REPEATS; rep++)); do
    for mode in $MODES; do
        run_once "$mode" "$rep"
    done
done
