# Shell functions shared by the benchmark scripts (run.sh, peers.sh): a fresh
# standalone gateway per run, the listening line it prints, and the rewriting of one
# <!-- bench:NAME --> section of BENCHMARKS.md. Expects $WORK (a temp dir) and
# $GATEWAY (the release binary); sets GW_PID, PORT and URL. GATEWAY_CONFIG names
# another configuration file than config/dev.toml.

start_gateway() {
    "$GATEWAY" --config "${GATEWAY_CONFIG:-config/dev.toml}" --listen 127.0.0.1:0 --log warn \
        >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
    GW_PID=$!
    PORT=$(announced "$WORK/gateway.out" "$GW_PID" "$GATEWAY_PORT" "$WORK/gateway.err")
    URL="ws://127.0.0.1:$PORT/connection/websocket"
}

stop_gateway() {
    if [ -n "${GW_PID:-}" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID"
        # The gateway drains (config/dev.toml: 10 s window + 5 s grace) before exiting.
        for _ in $(seq 1 200); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
    fi
    GW_PID=
}

# Waits (at most 10 s) for process $2 to print its listening line in file $1 and prints
# what the sed script $3 takes from it; if it never does, shows its stderr file $4.
announced() {
    local out=$1 pid=$2 script=$3 err=$4 value=
    for _ in $(seq 1 100); do
        value=$(sed -n "$script" "$out")
        [ -n "$value" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$value" ] || { echo "$out: no listening line: $(cat "$err" 2>/dev/null)" >&2; exit 1; }
    echo "$value"
}
GATEWAY_PORT='s/^switchboard-gateway listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p'

# Replaces (or appends) the section NAME of $BENCH_MD with the content of FILE.
replace_section() {
    local name=$1 file=$2
    touch "$BENCH_MD"
    awk -v begin="<!-- bench:$name begin" -v end="<!-- bench:$name end -->" -v file="$file" '
        index($0, begin) == 1 { while ((getline line < file) > 0) print line; skip = 1; done = 1; next }
        skip && index($0, end) == 1 { skip = 0; next }
        !skip { print }
        END { if (!done) { print ""; while ((getline line < file) > 0) print line } }
    ' "$BENCH_MD" >"$BENCH_MD.tmp" && mv "$BENCH_MD.tmp" "$BENCH_MD"
}

# Writes section NAME of $BENCH_MD from a table the tool printed: title TITLE, the
# command line COMMAND, the servers' NOTE and the table in file TABLE.
table_section() {
    local name=$1 title=$2 command=$3 note=$4 table=$5
    {
        echo "<!-- bench:$name begin (written by loadtest/bench/run.sh; edits inside are overwritten) -->"
        echo "### $title"
        echo
        echo '```sh'
        echo "$command"
        echo '```'
        echo
        echo "$note"
        echo
        echo '```'
        cat "$table"
        echo '```'
        echo "<!-- bench:$name end -->"
    } >"$WORK/section.md"
    replace_section "$name" "$WORK/section.md"
}
