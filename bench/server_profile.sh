#!/usr/bin/env bash
# Where a single-sentence request's time goes in `finsent serve` (issue 26): the server under 16 ab clients, with
# perf (system-wide or on the server) and the server's own batch counts; rows interleaved, one config after another.
#
#   bash bench/server_profile.sh outputs/bench26/minilm-pb              # 3 rounds of --streams 1 / 2, 15 s each
#   PERF=1 ROUNDS=1 CONFIGS="--streams=1" bash bench/server_profile.sh RUN   # + perf record -a, threads by CPU share
#   CONFIGS="/tmp/old/src@--streams=2 --streams=2,--balance_ms=0" bash bench/server_profile.sh RUN
#       a config is flags joined by commas, = for a space; SRC@ in front runs that checkout's finsent (PYTHONPATH)
#
# Prints the CPU model, the load average before each row, requests/s, p99 and the mean batch (requests / forward
# passes). Needs ab (apache2-utils); perf where PERF=1. The only job on the machine while it runs.
set -u
RUN=${1:?usage: bash bench/server_profile.sh RUN_DIR}
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-15}; PORT=${PORT:-8123}
CONFIGS=${CONFIGS:-"--streams=1 --streams=2"}
OUT=$(mktemp -d)
BODY=$OUT/body.json
echo '{"texts": ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 representing 7.7 % of net sales ."]}' > "$BODY"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs; run $RUN"
serving() { curl -s "http://127.0.0.1:$PORT/metadata" | python -c "import json,sys; s=json.load(sys.stdin)['serving']; print(s['requests_served'], s['forward_batches'])"; }
for round in $(seq "$ROUNDS"); do
  for cfg in $CONFIGS; do
    src=""; flags=$cfg
    if [[ $cfg == *@* ]]; then src=${cfg%%@*}; flags=${cfg#*@}; fi
    flags=$(echo "$flags" | tr '=,' '  ')
    env ${src:+PYTHONPATH=$src} python -m finsent serve --model_dir "$RUN" --threads 2 --host 127.0.0.1 --port "$PORT" --log_level warning $flags > "$OUT/server.log" 2>&1 &
    SPID=$!
    for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
    ab -q -c 16 -t 5 -n 1000000 -p "$BODY" -T application/json "http://127.0.0.1:$PORT/predict" > /dev/null 2>&1  # warm up
    load=$(cut -d' ' -f1 /proc/loadavg)
    read -r r0 b0 <<< "$(serving)"
    ab -q -c 16 -t "$SECS" -n 1000000 -p "$BODY" -T application/json "http://127.0.0.1:$PORT/predict" > "$OUT/ab.txt" 2>&1 &
    ABPID=$!
    if [ -n "${PERF:-}" ]; then sleep 2; perf record -F 499 -g -a -o "$OUT/perf.data" -- sleep $((SECS - 5)) > /dev/null 2>&1; fi
    wait $ABPID
    read -r r1 b1 <<< "$(serving)"
    kill $SPID; wait $SPID 2> /dev/null
    rps=$(awk '/^Requests per second/ {print $4}' "$OUT/ab.txt"); p99=$(awk '$1 == "99%" {print $2}' "$OUT/ab.txt")
    failed=$(awk '/^Failed requests/ {print $3}' "$OUT/ab.txt")
    echo "round $round $cfg: $rps requests/s, p99 $p99 ms, $failed failed, mean batch $(python -c "print(round(($r1 - $r0) / max(1, $b1 - $b0), 1))"); load before $load, after $(cut -d' ' -f1 /proc/loadavg)"
    if [ -n "${PERF:-}" ]; then
      perf report -i "$OUT/perf.data" --no-children --sort comm,pid --stdio -g none 2> /dev/null | grep -v '^#' | grep -v '^$' | head -8
    fi
  done
done
rm -rf "$OUT"
