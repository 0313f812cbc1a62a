#!/bin/sh
# Fetches Loghub's sixteen 2k structured CSVs into DIR (default
# target/loghub), corrected labels by default, Loghub's original ones with
# --original. See benches/loghub.md for the licence and the sources.
set -eu
kind=corrected
if [ "${1:-}" = "--original" ]; then kind=original; shift; fi
dir=${1:-target/loghub/$kind}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone --quiet --depth 1 https://github.com/logpai/logparser "$tmp/logparser"
for d in HDFS Hadoop Spark Zookeeper BGL HPC Thunderbird Windows Linux Android \
    HealthApp Apache OpenSSH OpenStack Mac Proxifier; do
    mkdir -p "$dir/$d"
    if [ "$kind" = corrected ]; then
        src="$tmp/logparser/data/loghub_2k_corrected/$d/${d}_2k.log_structured_corrected.csv"
    else
        src="$tmp/logparser/data/loghub_2k/$d/${d}_2k.log_structured.csv"
    fi
    cp "$src" "$dir/$d/${d}_2k.log_structured.csv"
done
cp "$tmp/logparser/data/loghub_2k/LICENSE" "$dir/LICENSE"
echo "$dir: 16 datasets; NIGHTOWL_LOGHUB=$dir"
