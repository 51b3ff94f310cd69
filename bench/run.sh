#!/usr/bin/env bash
# bench/run.sh — the otpd benchmark (`make bench`).  docs/PERFORMANCE.md says
# what each scenario means; this script builds otpd, starts nginx (the
# ceiling), nginx (the fake Kavenegar), otpd on fresh SQLite files in a temp
# dir, drives them with wrk + bench/*.lua, and writes the table into the
# generated block of docs/PERFORMANCE.md (bench/report.py).
#
# Everything listens on 127.0.0.1 only.  Every knob is an environment
# variable (defaults below); e.g. a quick look:
#   BENCH_RUNS=1 BENCH_DURATION=3 BENCH_SCENARIOS=static,send,verify bench/run.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BENCH="$REPO/bench"
PY=/usr/bin/python3
HELP="$PY $BENCH/helpers.py"

# What the caller set explicitly (for "the exact command" in the report).
# (make bench passes BENCH_CMD, with PROFILE in it.)
if [ -n "${BENCH_CMD:-}" ]; then
	OVERRIDES=$(env | grep -E '^BENCH_[A-Z_]+=.' | grep -v '^BENCH_CMD=' | sort | tr '\n' ' ' || true)
else
	OVERRIDES=$(env | grep -E '^(BENCH_[A-Z_]+|PROFILE)=.' | sort | tr '\n' ' ' || true)
fi

ALL_SCENARIOS=static,send,send-console,verify,slow,large,memory,pg-send,pg-verify,pg3-send,pg3-verify
: "${BENCH_SCENARIOS:=$ALL_SCENARIOS}"   # comma-separated subset
: "${BENCH_RUNS:=3}"                     # timed runs per scenario (median)
: "${BENCH_DURATION:=10}"                # seconds per timed run
: "${BENCH_WARMUP:=2}"                   # seconds of untimed warm-up per scenario
: "${BENCH_THREADS:=2}"                  # wrk -t
: "${BENCH_CONNS:=64}"                   # wrk -c
: "${BENCH_NGINX_WORKERS:=2}"            # nginx-static worker_processes
: "${BENCH_PROVIDER_WORKERS:=1}"         # fake-provider nginx worker_processes
: "${BENCH_VERIFY_POOL:=300000}"         # prefilled codes per verify run (>= rps * duration)
: "${BENCH_SLOW_CONNS:=1000}"            # sends in flight in the slow-provider scenario
: "${BENCH_SLOW_DELAY:=1}"               # seconds the slow provider waits
: "${BENCH_LARGE_CODES:=10000000}"       # codes in the large database (<= 10^7)
: "${BENCH_LARGE_USERS:=1000000}"        # users in the large database
: "${BENCH_LARGE_KNOWN:=2000001}"       # of those, codes the verify runs can use (real hashes)
: "${BENCH_LARGE_CACHE:=1}"              # keep the large db in build-bench/cache (rebuilt when stale)
: "${BENCH_STARTS:=3}"                   # time-to-ready measures (median)
: "${BENCH_IDLE_CONNS:=1000}"            # idle connections for the RSS measure
: "${BENCH_SOAK:=60}"                    # soak seconds (the issue's target: 600)
: "${BENCH_SOAK_SAMPLE:=5}"              # RSS sample interval during the soak
: "${BENCH_REF:=}"                       # a git ref to build instead of the working tree
: "${BENCH_DOC:=docs/PERFORMANCE.md}"
: "${BENCH_QUIET:=0.10}"                 # before each timed run, wait until others use < this share of the CPU
: "${BENCH_QUIET_WAIT:=15}"              # ... for at most this many seconds
: "${BENCH_KEEP:=0}"                     # keep the temp dir (logs, databases)
: "${BENCH_OTPD_ENV:=}"                   # extra otpd environment, e.g. "OTPD_THREADS=4"
: "${BENCH_OTPD_LOG:=file}"              # file (in the temp dir) or null
: "${BENCH_CLIENTS:=many}"               # many: each request its own client address (X-Forwarded-For); one: wrk's
: "${BENCH_PG_NODES:=3}"                 # otpd nodes behind nginx in the pg3-* scenarios
: "${BENCH_PG_SETTINGS:=shared_buffers=256MB}" # PostgreSQL settings over tests/pgcluster.py's (space-separated)
: "${BENCH_LB_WORKERS:=1}"               # nginx load balancer worker_processes (pg3-*)
: "${BENCH_CMD:=bench/run.sh}"
: "${PROFILE:=0}"
[ -z "$PROFILE" ] && PROFILE=0
if [ -z "${BENCH_WRITE_DOC:-}" ]; then
	[ "$BENCH_SCENARIOS" = "$ALL_SCENARIOS" ] && BENCH_WRITE_DOC=1 || BENCH_WRITE_DOC=0
fi

SECRET="bench-secret-key-0123456789abcdef0123456789"   # fixed: prefill and otpd agree
API_KEY=benchkey0123456789
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/otpd-bench.XXXXXX")
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
PIDS=()

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
has() { case ",$BENCH_SCENARIOS," in *",$1,"*) return 0 ;; esac; return 1; }

stop_pid() { # pid [signal]: stop one process we started, wait for it
	local pid=$1 sig=${2:-TERM} i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local rc=$? p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "$BENCH_KEEP" = 1 ] || [ $rc -ne 0 ]; then
		log "temp dir kept: $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { # one JSON object per line into results.jsonl
	printf '%s\n' "$1" >>"$RESULTS"
}

# ---------------------------------------------------------------- setup

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$REPO/tools/deps.sh" --bench # wrk, nginx-light, linux-perf: one command sets everything up
for tool in wrk nginx curl sqlite3 psql; do
	command -v "$tool" >/dev/null || die "$tool missing: tools/deps.sh --bench"
done
[ "$(stat -f -c %T "$TMP")" = tmpfs ] && log "WARNING: $TMP is tmpfs: fsync is free there, durable numbers are not"

if [ -n "$BENCH_REF" ]; then
	SRC="$TMP/src"
	mkdir -p "$SRC/bench"
	git archive "$BENCH_REF" | tar -x -C "$SRC"
	# The ref's own build and prefill (its schema) when it has them; a ref
	# older than the benchmark gets today's.
	# (today's when the ref's cannot load PostgreSQL: the pg-* scenarios
	# need that; it is built against the ref's own store, so its schema)
	grep -qs 'postgres_sink' "$SRC/bench/prefill.c" || cp "$BENCH/prefill.c" "$SRC/bench/"
	grep -q 'bench/prefill' "$SRC/Makefile" && MAKEFILE="$SRC/Makefile"
	COMMIT=$(git rev-parse "$BENCH_REF^{commit}")
	COMMIT_NOTE="$BENCH_REF (git archive)"
else
	SRC="$REPO"
	COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git status --porcelain -- src 2>/dev/null)" ]; then
		COMMIT_NOTE="working tree, with uncommitted changes in src/"
	else
		COMMIT_NOTE="working tree, clean"
	fi
fi
log "building otpd and bench/prefill ($COMMIT_NOTE) into $SRC/build-bench"
make -s -C "$SRC" -f "${MAKEFILE:-$REPO/Makefile}" BUILD=build-bench -j"$(nproc)" \
	build-bench/otpd build-bench/bench/prefill >&2 || die "build (BENCH_REF=HEAD benchmarks the last commit instead of the working tree)"
OTPD="$SRC/build-bench/otpd"
PREFILL="$SRC/build-bench/bench/prefill"

# ---------------------------------------------------------------- services

start_nginx() { # name conf workers -> NGINX_PORT, NGINX_PID
	local name=$1 conf=$2 workers=$3 dir="$TMP/$1"
	mkdir -p "$dir"
	NGINX_PORT=$($HELP freeport)
	sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@WORKERS@#$workers#g" \
		-e "s#@UPSTREAMS@#${NGINX_UPSTREAMS:-}#g" "$BENCH/$conf" >"$dir/nginx.conf"
	nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	local i
	for ((i = 0; i < 200; i++)); do
		curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT${NGINX_CHECK:-/}" && return 0
		sleep 0.05
	done
	die "nginx $name did not start ($dir/error.log)"
}

PROVIDER_URL=""
provider_up() { # the fast fake Kavenegar (nginx), started once
	[ -n "$PROVIDER_URL" ] && return 0
	start_nginx provider nginx-provider.conf "$BENCH_PROVIDER_WORKERS"
	PROVIDER_URL="http://127.0.0.1:$NGINX_PORT"
	local out
	out=$(curl -s -X POST -d 'receptor=09120000000&message=x' "$PROVIDER_URL/v1/$API_KEY/sms/send.json")
	case "$out" in *'"status":200'*) ;; *) die "fake provider answers: $out" ;; esac
	log "fake provider (nginx, $BENCH_PROVIDER_WORKERS worker) at $PROVIDER_URL"
}

# start_otpd name db backend provider_url [VAR=value ...]
#   db: a SQLite file, or a postgres:// URL
#   -> OTPD_PID, OTPD_URL, READY_MS (spawn to first 200 on /readyz)
start_otpd() {
	local name=$1 db=$2 backend=$3 url=$4 logf t0 dburl
	shift 4
	case "$db" in postgres://* | postgresql://*) dburl=$db ;; *) dburl="sqlite:$db" ;; esac
	OTPD_NAME=$name
	OTPD_PORT=$($HELP freeport)
	OTPD_URL="http://127.0.0.1:$OTPD_PORT"
	if [ "$BENCH_OTPD_LOG" = null ]; then logf=/dev/null; else logf="$TMP/$name.otpd.log"; fi
	t0=$(date +%s%N)
	env -i PATH="$PATH" HOME="$TMP" \
		OTPD_LISTEN="127.0.0.1:$OTPD_PORT" DATABASE_URL="$dburl" SECRET_KEY="$SECRET" \
		OTP_THROTTLE_RATE=1000000/sec OTP_VERIFY_THROTTLE_RATE=1000000/sec OTPD_TRUSTED_PROXIES=127.0.0.1 \
		OTP_SEND_LIMIT=100000 OTP_EXPIRY_TIME=86400 \
		SMS_BACKEND="$backend" KAVENEGAR_API_KEY="$API_KEY" KAVENEGAR_API_URL="$url" \
		$BENCH_OTPD_ENV "$@" "$OTPD" serve 2>>"$logf" &
	OTPD_PID=$!
	PIDS+=("$OTPD_PID")
	READY_MS=$($HELP ready "$OTPD_URL/readyz" --t0-ns "$t0" --timeout 60) ||
		die "otpd ($name) not ready; log: $logf"
}

stop_otpd() { # stop otpd, summarise its log into the results
	stop_pid "$OTPD_PID"
	local name=$OTPD_NAME
	OTPD_PID=""
	OTPD_NAME=$name
	[ "$BENCH_OTPD_LOG" = null ] && return 0
	local sum
	sum=$($HELP logsum "$TMP/$OTPD_NAME.otpd.log") || return 0
	record "{\"scenario\":\"otpd-log\",\"run\":1,\"name\":\"$OTPD_NAME\",\"log\":$sum}"
}

check_send() { # url phone: one send must answer 200
	local out
	out=$(curl -s -w ' HTTP%{http_code}' -X POST "$1/api/v1/usr/otp" \
		-H 'Content-Type: application/json' -d "{\"phone_number\":\"$2\"}")
	case "$out" in *'"OTP sent successfully"'*' HTTP200') ;; *) die "send check: $out" ;; esac
}

check_verify() { # url index: the prefilled code of pool entry `index` must verify
	local phone code out
	phone=$(printf '+98910%07d' "$2")
	code=$(printf '%06d' $(($2 % 1000000)))
	out=$(curl -s -w ' HTTP%{http_code}' -X POST "$1/api/v1/usr/otp/verify" \
		-H 'Content-Type: application/json' \
		-d "{\"phone_number\":\"$phone\",\"code\":\"$code\"}")
	case "$out" in *'"access_token"'*' HTTP200') ;; *) die "verify check ($phone): $out" ;; esac
}

prefill() { # db args...
	local out
	out=$("$PREFILL" "$@") || die "prefill $*"
	log "prefill: $out"
	PREFILL_OUT=$out
}

# ---------------------------------------------------------------- wrk

HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
child_ticks() { # CPU ticks of this shell's waited-for children (wrk), from `times`
	times >"$TMP/times" # not in $(...): a subshell has children of its own
	sed -n 2p "$TMP/times" | awk -v hz="$HZ" '{
		n = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); n += a[1] * 60 + a[2] }
		printf "%d\n", n * hz }'
}
# share of the machine's CPU used by processes that are not the benchmark's
# (other builds and tests on a shared machine) between two snapshots
foreign_share() { # "busy ours"0 "busy ours"1 children0 children1 t0_ns t1_ns
	awk -v a="$1" -v b="$2" -v k0="$3" -v k1="$4" -v t0="$5" -v t1="$6" -v hz="$HZ" -v n="$NCPU" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		f = ((y[1] - x[1]) - (y[2] - x[2]) - (k1 - k0)) / hz / ((t1 - t0) / 1e9 * n)
		if (f < 0) f = 0
		printf "%.3f\n", f }'
}

# otpd's own CPU (utime + stime, clock ticks) so far; 0 when no otpd runs
# (the nginx ceiling).  Per request: the steadiest figure on a shared host.
# OTPD_PIDS: every node of a cluster scenario (else OTPD_PID alone).
otpd_ticks() {
	local p n=0 t
	for p in ${OTPD_PIDS:-${OTPD_PID:-}}; do
		[ -r "/proc/$p/stat" ] || continue
		t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")
		n=$((n + t))
	done
	echo "$n"
}

# PostgreSQL's CPU (every process of the bench's server: the backends, WAL
# writer, checkpointer, ...) so far; 0 when it does not run.
pg_ticks() {
	local pm n=0 p t
	[ -n "${PG_DIR:-}" ] && [ -r "$PG_DIR/data/postmaster.pid" ] || { echo 0; return; }
	pm=$(head -1 "$PG_DIR/data/postmaster.pid")
	for p in "$pm" $(pgrep -P "$pm"); do
		[ -r "/proc/$p/stat" ] || continue
		t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")
		n=$((n + t))
	done
	echo "$n"
}

# wrk_run scenario run(0 = warm-up, not recorded) threads conns seconds script url [timeout] -- args
#   -> WRK_JSON (the BENCH line, tagged), WRK_ISSUED
wrk_run() {
	local scen=$1 run=$2 t=$3 c=$4 d=$5 script=$6 url=$7 to=${8:-2}
	shift 8
	[ "${1:-}" = -- ] && shift
	local out="$TMP/wrk-$scen-$run.txt" waited="0 0" c0 c1 t0 t1 foreign
	[ "$run" -gt 0 ] && [ -z "${NO_QUIET:-}" ] && waited=$($HELP quiet $$ --threshold "$BENCH_QUIET" --max-wait "$BENCH_QUIET_WAIT")
	local u0 u1 g0 g1
	c0=$($HELP cpu $$); child_ticks >"$TMP/k0"; t0=$(date +%s%N); u0=$(otpd_ticks); g0=$(pg_ticks)
	wrk -t"$t" -c"$c" -d"${d}s" --latency --timeout "${to}s" -s "$BENCH/$script" "$url" -- "$@" >"$out" 2>&1 ||
		die "wrk $scen run $run: $(tail -3 "$out")"
	u1=$(otpd_ticks); g1=$(pg_ticks); c1=$($HELP cpu $$); child_ticks >"$TMP/k1"; t1=$(date +%s%N)
	# PostgreSQL is ours too, though not our child (pg_ctl detaches it)
	foreign=$(foreign_share "$c0" "$c1" "$(cat "$TMP/k0")" "$(($(cat "$TMP/k1") + g1 - g0))" "$t0" "$t1")
	local line
	line=$(sed -n 's/^BENCH {//p' "$out")
	[ -n "$line" ] || die "wrk $scen run $run printed no result: $(tail -3 "$out")"
	WRK_JSON="{\"scenario\":\"$scen\",\"run\":$run,\"threads\":$t,\"conns\":$c,\"seconds\":$d,\"quiet_wait_s\":${waited%% *},\"foreign_cpu\":$foreign,\"otpd_ticks\":$((u1 - u0)),\"pg_ticks\":$((g1 - g0)),\"hz\":$HZ,$line"
	WRK_ISSUED=$(printf '%s' "$line" | sed -n 's/.*"issued":\([0-9]*\).*/\1/p')
	if [ "$run" -gt 0 ]; then
		record "$WRK_JSON"
		log "$scen run $run: $(printf '%s' "$line" | sed -E 's/.*"rps":([0-9.]+).*"p50_us":([0-9]+).*"p99_us":([0-9]+).*"err_connect":([0-9]+),"err_read":([0-9]+),"err_write":([0-9]+),"err_status":([0-9]+),"err_timeout":([0-9]+).*/\1 rps, p50 \2 us, p99 \3 us, errors c\4 r\5 w\6 status\7 timeout\8/'); others' CPU $foreign (waited ${waited%% *} s)"
	fi
}

# The scripts' optional arguments: number prefix, path, client addresses.
case "$BENCH_CLIENTS" in one | many) ;; *) die "BENCH_CLIENTS: one or many, not '$BENCH_CLIENTS'" ;; esac
SEND_ARGS="+98912 /api/v1/usr/otp $BENCH_CLIENTS"
VERIFY_ARGS="+98910 $BENCH_CLIENTS"

# A median later needs the run count; per-scenario send numbers continue
# where the last run stopped (a new number per request, across runs).
SEND_NEXT=0
send_runs() { # scenario url [profile-name]
	local scen=$1 url=$2 prof=${3:-} r
	wrk_run "$scen" 0 "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_WARMUP" send.lua "$url" 2 -- "$SEND_NEXT" "$BENCH_THREADS" $SEND_ARGS
	SEND_NEXT=$((SEND_NEXT + WRK_ISSUED))
	for ((r = 1; r <= BENCH_RUNS; r++)); do
		wrk_run "$scen" "$r" "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_DURATION" send.lua "$url" 2 -- "$SEND_NEXT" "$BENCH_THREADS" $SEND_ARGS
		SEND_NEXT=$((SEND_NEXT + WRK_ISSUED))
	done
	if [ "$PROFILE" = 1 ] && [ -n "$prof" ]; then
		profile_run "$prof" send.lua "$url" "$SEND_NEXT" "$BENCH_THREADS" $SEND_ARGS
		SEND_NEXT=$((SEND_NEXT + WRK_ISSUED))
	fi
}

verify_runs() { # scenario url pool [profile-name]: run r uses codes [r*pool, (r+1)*pool), warm-up r = 0
	local scen=$1 url=$2 pool=$3 prof=${4:-} r
	wrk_run "$scen" 0 "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_WARMUP" verify.lua "$url" 2 -- 0 "$pool" "$BENCH_THREADS" $VERIFY_ARGS
	for ((r = 1; r <= BENCH_RUNS; r++)); do
		wrk_run "$scen" "$r" "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_DURATION" verify.lua "$url" 2 -- \
			$((r * pool)) "$pool" "$BENCH_THREADS" $VERIFY_ARGS
	done
	if [ "$PROFILE" = 1 ] && [ -n "$prof" ]; then
		profile_run "$prof" verify.lua "$url" $(((BENCH_RUNS + 1) * pool)) "$pool" "$BENCH_THREADS" $VERIFY_ARGS
	fi
}

# ---------------------------------------------------------------- profile

PERF_OK=""
perf_works() {
	if [ -z "$PERF_OK" ]; then
		PERF_OK=no
		if command -v perf >/dev/null &&
			perf record -q -e cpu-clock -o "$TMP/perf-check.data" -- true >/dev/null 2>&1; then
			PERF_OK=yes
		fi
	fi
	[ "$PERF_OK" = yes ]
}

# profile_run name script url args...: one more (unrecorded) run of the same
# load, with the sampler attached to otpd; writes docs/perf-<name>.txt.
profile_run() {
	local name=$1 script=$2 url=$3
	shift 3
	local data="$TMP/perf-$name.data" sdata="$TMP/perf-$name-sched.data" txt="$REPO/docs/perf-$name.txt" rps
	if perf_works; then
		log "profiling $name: perf record on otpd (pid $OTPD_PID) for ${BENCH_DURATION}s"
		# on-CPU: where the CPU time goes
		perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$OTPD_PID" -o "$data" \
			-- sleep "$BENCH_DURATION" >/dev/null 2>"$TMP/perf-$name.err" &
		local perf_pid=$!
		PIDS+=("$perf_pid")
		# off-CPU: where the threads go to sleep (every 20th context switch)
		local sched_pid=""
		if perf record -q -e sched:sched_switch -c 1 -o "$TMP/perf-sched-check.data" -- true >/dev/null 2>&1; then
			perf record -q -e sched:sched_switch -c 20 --call-graph dwarf,8192 -p "$OTPD_PID" -o "$sdata" \
				-- sleep "$BENCH_DURATION" >/dev/null 2>"$TMP/perf-$name-sched.err" &
			sched_pid=$!
			PIDS+=("$sched_pid")
		fi
		wrk_run "$name-profiled" 0 "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_DURATION" "$script" "$url" 2 -- "$@"
		wait "$perf_pid" || true
		[ -n "$sched_pid" ] && { wait "$sched_pid" || true; }
		rps=$(printf '%s' "$WRK_JSON" | sed -n 's/.*"rps":\([0-9.]*\).*/\1/p')
		local strip='s/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'
		set +o pipefail # head closes the pipes early
		{
			echo "# otpd CPU profile: $name scenario ($(date -u +%Y-%m-%dT%H:%MZ), commit ${COMMIT:0:12}, $COMMIT_NOTE)"
			echo "# perf record -e cpu-clock -F 499 --call-graph dwarf -p <otpd>, during one ${BENCH_DURATION}s run of"
			echo "#   wrk -t$BENCH_THREADS -c$BENCH_CONNS -s bench/$script  (${rps} rps while profiled: perf slows it)"
			echo "# cpu-clock (software): hardware counters are not available in this VM."
			echo "# Generated by bench/run.sh with PROFILE=1; unresolved hex frames are libraries without symbols."
			echo
			echo "## On-CPU, self time (flat), top 40: where the CPU is spent"
			perf report -i "$data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.3 2>/dev/null |
				grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -40
			echo
			echo "## On-CPU, inclusive time (children), top 45: which calls the CPU time is spent under"
			perf report -i "$data" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null |
				grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -45
			echo
			echo "## On-CPU, by thread"
			perf report -i "$data" --stdio --no-children --sort comm,pid -g none 2>/dev/null |
				grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -12
			if [ -s "$sdata" ]; then
				echo
				echo "## Off-CPU: where threads block (sched:sched_switch, every 20th switch; share of switches"
				echo "## with that function on the stack: counts of sleeps, not their length), top 45"
				perf report -i "$sdata" --stdio --children --sort symbol -g none --percent-limit 3 2>/dev/null |
					grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -45
			fi
		} >"$txt"
		set -o pipefail
	else
		log "perf cannot sample here: profiling $name with valgrind --tool=callgrind (a short run)"
		profile_callgrind "$name" "$script" "$@"
		return 0
	fi
	log "wrote ${txt#"$REPO"/}"
}

# Fallback: restart otpd under callgrind on a copy of its db for a short,
# light run (callgrind is ~50x slower: the numbers are instruction counts).
profile_callgrind() {
	local name=$1 script=$2
	shift 2
	command -v valgrind >/dev/null || { log "no valgrind either: no profile"; return 0; }
	local port out="$TMP/callgrind-$name.out" txt="$REPO/docs/perf-$name.txt"
	port=$($HELP freeport)
	cp "$CUR_DB" "$TMP/cg.db" 2>/dev/null || true
	env -i PATH="$PATH" HOME="$TMP" OTPD_LISTEN="127.0.0.1:$port" DATABASE_URL="sqlite:$TMP/cg.db" \
		SECRET_KEY="$SECRET" OTP_THROTTLE_RATE=1000000/sec OTP_VERIFY_THROTTLE_RATE=1000000/sec \
		OTP_SEND_LIMIT=100000 OTP_EXPIRY_TIME=86400 SMS_BACKEND=kavenegar KAVENEGAR_API_KEY="$API_KEY" \
		KAVENEGAR_API_URL="$PROVIDER_URL" \
		valgrind --tool=callgrind --callgrind-out-file="$out" "$OTPD" serve 2>"$TMP/cg.log" &
	local pid=$!
	PIDS+=("$pid")
	$HELP ready "http://127.0.0.1:$port/readyz" --timeout 120 >/dev/null || { stop_pid "$pid"; return 0; }
	wrk -t1 -c8 -d5s -s "$BENCH/$script" "http://127.0.0.1:$port" -- "$@" >/dev/null 2>&1 || true
	stop_pid "$pid"
	{
		echo "# otpd profile: $name scenario, valgrind --tool=callgrind (perf unavailable), wrk -t1 -c8 -d5s"
		echo "# instruction counts (Ir), not time: fsync and waits do not show.  Generated by bench/run.sh PROFILE=1."
		callgrind_annotate --inclusive=yes "$out" 2>/dev/null | head -60 || true
	} >"$txt"
	log "wrote ${txt#"$REPO"/}"
}

# ---------------------------------------------------------------- scenarios

scenario_static() {
	log "== static: nginx answering every POST with a fixed 200 JSON body ($BENCH_NGINX_WORKERS workers)"
	start_nginx static nginx-static.conf "$BENCH_NGINX_WORKERS"
	local url="http://127.0.0.1:$NGINX_PORT" pid=$NGINX_PID
	SEND_NEXT=0
	send_runs static "$url"
	stop_pid "$pid"
}

scenario_send() { # scenario backend
	local scen=$1 backend=$2 dir="$TMP/$1" url
	mkdir -p "$dir"
	if [ "$backend" = kavenegar ]; then provider_up; url=$PROVIDER_URL; else url=http://127.0.0.1:9; fi
	log "== $scen: POST /api/v1/usr/otp, a new number per request, SMS backend $backend"
	CUR_DB="$dir/otpd.db"
	start_otpd "$scen" "$CUR_DB" "$backend" "$url"
	record "{\"scenario\":\"ready-empty\",\"run\":1,\"ready_ms\":$READY_MS}"
	check_send "$OTPD_URL" +989129999999
	SEND_NEXT=0
	if [ "$scen" = send ]; then send_runs "$scen" "$OTPD_URL" send; else send_runs "$scen" "$OTPD_URL"; fi
	stop_otpd
}

scenario_verify() {
	local dir="$TMP/verify" slices=$((BENCH_RUNS + 2)) check
	mkdir -p "$dir"
	provider_up
	log "== verify: POST /api/v1/usr/otp/verify with prefilled codes, tokens included"
	check=$((slices * BENCH_VERIFY_POOL))
	CUR_DB="$dir/otpd.db"
	prefill "$CUR_DB" "$SECRET" --codes $((check + 1))
	start_otpd verify "$CUR_DB" kavenegar "$PROVIDER_URL"
	check_verify "$OTPD_URL" "$check"
	verify_runs verify "$OTPD_URL" "$BENCH_VERIFY_POOL" verify
	stop_otpd
}

scenario_slow() {
	local dir="$TMP/slow" check port sp_pid r
	mkdir -p "$dir"
	port=$($HELP freeport)
	$PY "$BENCH/slow_provider.py" --port "$port" --delay "$BENCH_SLOW_DELAY" 2>"$dir/slow_provider.log" &
	sp_pid=$!
	PIDS+=("$sp_pid")
	log "== slow: $BENCH_SLOW_CONNS sends in flight to a provider answering after ${BENCH_SLOW_DELAY}s, verify load alongside"
	check=$(((BENCH_RUNS + 1) * BENCH_VERIFY_POOL))
	CUR_DB="$dir/otpd.db"
	prefill "$CUR_DB" "$SECRET" --codes $((check + 1))
	start_otpd slow "$CUR_DB" kavenegar "http://127.0.0.1:$port"
	check_send "$OTPD_URL" +989129999999
	check_verify "$OTPD_URL" "$check"
	SEND_NEXT=0
	# warm-up: verify only
	wrk_run slow-verify 0 "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_WARMUP" verify.lua "$OTPD_URL" 2 -- 0 "$BENCH_VERIFY_POOL" "$BENCH_THREADS" $VERIFY_ARGS
	for ((r = 1; r <= BENCH_RUNS; r++)); do
		local sends_out="$dir/sends-$r.txt" wpid
		$HELP quiet $$ --threshold "$BENCH_QUIET" --max-wait "$BENCH_QUIET_WAIT" >/dev/null
		wrk -t1 -c"$BENCH_SLOW_CONNS" -d"${BENCH_DURATION}s" --latency --timeout 30s -s "$BENCH/send.lua" \
			"$OTPD_URL" -- "$SEND_NEXT" 1 $SEND_ARGS >"$sends_out" 2>&1 &
		wpid=$!
		PIDS+=("$wpid")
		NO_QUIET=1 wrk_run slow-verify "$r" "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_DURATION" verify.lua "$OTPD_URL" 2 -- \
			$((r * BENCH_VERIFY_POOL)) "$BENCH_VERIFY_POOL" "$BENCH_THREADS" $VERIFY_ARGS
		wait "$wpid" || die "wrk slow sends: $(tail -3 "$sends_out")"
		local line
		line=$(sed -n 's/^BENCH {//p' "$sends_out")
		[ -n "$line" ] || die "wrk slow sends printed nothing: $(tail -3 "$sends_out")"
		record "{\"scenario\":\"slow-send\",\"run\":$r,\"threads\":1,\"conns\":$BENCH_SLOW_CONNS,\"seconds\":$BENCH_DURATION,\"delay_s\":$BENCH_SLOW_DELAY,$line"
		log "slow-send run $r: $(printf '%s' "$line" | sed -E 's/.*"requests":([0-9]+).*"rps":([0-9.]+).*"p50_us":([0-9]+).*"p99_us":([0-9]+).*"err_status":([0-9]+),"err_timeout":([0-9]+).*/\1 answered, \2 rps, p50 \3 us, p99 \4 us, status errors \5, timeouts \6/')"
		SEND_NEXT=$((SEND_NEXT + $(printf '%s' "$line" | sed -n 's/.*"issued":\([0-9]*\).*/\1/p')))
		sleep "$BENCH_SLOW_DELAY" # let the last sends drain
	done
	stop_otpd
	stop_pid "$sp_pid"
	local st
	st=$(sed -n 's/^STATS //p' "$dir/slow_provider.log")
	[ -n "$st" ] && record "{\"scenario\":\"slow-provider-stats\",\"run\":1,\"stats\":$st}"
	log "slow provider: $st"
}

large_db() { # -> LARGE_DB (a fresh copy for this run), LARGE_KNOWN
	local need=$BENCH_LARGE_KNOWN
	[ "$need" -le "$BENCH_LARGE_CODES" ] || need=$BENCH_LARGE_CODES
	LARGE_KNOWN=$need
	local key cache src
	key=$(cat "$SRC/src/store/migrations_sqlite.c" "$BENCH/prefill.c" |
		{ cat; echo "$BENCH_LARGE_CODES $BENCH_LARGE_USERS $need $SECRET"; } | sha256sum | cut -c1-16)
	cache="$REPO/build-bench/cache"
	src="$cache/large-$key.db"
	if [ "$BENCH_LARGE_CACHE" = 1 ] && [ -f "$src" ] && [ -f "$src.json" ] &&
		[ -n "$(find "$src" -mmin -1200)" ]; then
		log "large db: cached $src"
		PREFILL_OUT=$(cat "$src.json")
		record "{\"scenario\":\"large-load\",\"run\":1,\"cached\":true,\"load\":$PREFILL_OUT}"
	else
		mkdir -p "$cache"
		rm -f "$cache"/large-*.db "$cache"/large-*.db.json "$cache"/large-*.db-wal "$cache"/large-*.db-shm
		[ "$BENCH_LARGE_CACHE" = 1 ] || src="$TMP/large-src.db"
		log "large db: loading $BENCH_LARGE_CODES codes ($need known) and $BENCH_LARGE_USERS users"
		prefill "$src" "$SECRET" --codes "$need" --total "$BENCH_LARGE_CODES" --users "$BENCH_LARGE_USERS"
		printf '%s\n' "$PREFILL_OUT" >"$src.json"
		record "{\"scenario\":\"large-load\",\"run\":1,\"cached\":false,\"load\":$PREFILL_OUT}"
	fi
	LARGE_DB="$TMP/large/otpd.db"
	mkdir -p "$TMP/large"
	cp "$src" "$LARGE_DB"
	record "{\"scenario\":\"large-size\",\"run\":1,\"bytes\":$(stat -c %s "$LARGE_DB")}"
}

scenario_large() {
	provider_up
	log "== large: $BENCH_LARGE_CODES codes / $BENCH_LARGE_USERS users"
	large_db
	local i ms check=$((LARGE_KNOWN - 1))
	CUR_DB=$LARGE_DB
	for ((i = 1; i <= BENCH_STARTS; i++)); do
		start_otpd "large-start-$i" "$LARGE_DB" kavenegar "$PROVIDER_URL"
		record "{\"scenario\":\"ready-large\",\"run\":$i,\"ready_ms\":$READY_MS}"
		log "large: otpd serve ready in $READY_MS ms"
		stop_otpd
	done
	start_otpd large "$LARGE_DB" kavenegar "$PROVIDER_URL"
	check_send "$OTPD_URL" +989129999999
	check_verify "$OTPD_URL" "$check"
	SEND_NEXT=0
	send_runs large-send "$OTPD_URL"
	# the same pool per run as the empty-db verify, unless the known codes are fewer
	local pool=$((check / (BENCH_RUNS + 1)))
	[ "$pool" -le "$BENCH_VERIFY_POOL" ] || pool=$BENCH_VERIFY_POOL
	[ "$pool" -lt "$BENCH_VERIFY_POOL" ] && log "large: only $pool codes per verify run (BENCH_LARGE_KNOWN)"
	verify_runs large-verify "$OTPD_URL" "$pool"
	stop_otpd
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

scenario_memory() {
	local dir="$TMP/memory" idle1 idle2 held hp pool soak_end t s
	mkdir -p "$dir"
	provider_up
	log "== memory: RSS with $BENCH_IDLE_CONNS idle connections, then a ${BENCH_SOAK}s soak"
	# the soak verifies codes too: one per request, sized from the verify rate
	pool=$($PY - "$RESULTS" "$BENCH_SOAK" "$BENCH_VERIFY_POOL" "$BENCH_DURATION" <<'EOF'
import json, sys, statistics
res, soak, pool, dur = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rates = [json.loads(l)["rps"] for l in open(res) if '"scenario":"verify"' in l]
rate = statistics.median(rates) if rates else pool / dur
print(min(9000000, max(10000, int(rate * soak * 1.2))))
EOF
)
	CUR_DB="$dir/otpd.db"
	prefill "$CUR_DB" "$SECRET" --codes "$pool"
	start_otpd memory "$CUR_DB" kavenegar "$PROVIDER_URL"
	sleep 1
	idle1=$(rss_kib "$OTPD_PID")
	$PY "$BENCH/helpers.py" hold "$OTPD_PORT" "$BENCH_IDLE_CONNS" --seconds 60 --ready-file "$dir/held" \
		>"$dir/hold.json" &
	hp=$!
	PIDS+=("$hp")
	for ((t = 0; t < 600; t++)); do [ -s "$dir/held" ] && break; sleep 0.05; done
	sleep 2
	idle2=$(rss_kib "$OTPD_PID")
	held=$(cat "$dir/held" 2>/dev/null || echo 0)
	stop_pid "$hp"
	record "{\"scenario\":\"rss-idle\",\"run\":1,\"rss_start_kib\":$idle1,\"rss_conns_kib\":$idle2,\"conns\":$BENCH_IDLE_CONNS,\"held\":${held:-0},\"hold\":$(cat "$dir/hold.json" 2>/dev/null || echo null)}"
	log "memory: RSS $idle1 KiB at start, $idle2 KiB with ${held} idle connections"

	# soak: sends (new numbers, fake provider) and verifies at once
	local half=$((BENCH_CONNS / 2)) sp vp
	[ "$half" -ge 1 ] || half=1
	wrk -t1 -c"$half" -d"${BENCH_SOAK}s" --latency -s "$BENCH/send.lua" "$OTPD_URL" -- 0 1 $SEND_ARGS \
		>"$dir/soak-send.txt" 2>&1 &
	sp=$!
	PIDS+=("$sp")
	wrk -t1 -c"$half" -d"${BENCH_SOAK}s" --latency -s "$BENCH/verify.lua" "$OTPD_URL" -- 0 "$pool" 1 $VERIFY_ARGS \
		>"$dir/soak-verify.txt" 2>&1 &
	vp=$!
	PIDS+=("$vp")
	local samples="" start_s=$SECONDS
	while kill -0 "$sp" 2>/dev/null || kill -0 "$vp" 2>/dev/null; do
		sleep "$BENCH_SOAK_SAMPLE"
		kill -0 "$sp" 2>/dev/null || break
		s=$(rss_kib "$OTPD_PID")
		samples="$samples${samples:+,}[$((SECONDS - start_s)),$s]"
	done
	wait "$sp" || true
	wait "$vp" || true
	local ls lv
	ls=$(sed -n 's/^BENCH {//p' "$dir/soak-send.txt")
	lv=$(sed -n 's/^BENCH {//p' "$dir/soak-verify.txt")
	soak_end=$(rss_kib "$OTPD_PID")
	[ -n "$ls" ] && ls="{$ls" || ls="{}"
	[ -n "$lv" ] && lv="{$lv" || lv="{}"
	record "{\"scenario\":\"soak\",\"run\":1,\"seconds\":$BENCH_SOAK,\"samples\":[${samples}],\"rss_end_kib\":$soak_end,\"send\":$ls,\"verify\":$lv}"
	log "memory: soak samples (s, KiB): $samples"
	stop_otpd
}

# ---------------------------------------------------------------- PostgreSQL

# One throwaway PostgreSQL 15 for every pg-* scenario (tests/pgcluster.py:
# initdb in a temp dir, fsync and synchronous_commit on, a free port), with
# BENCH_PG_SETTINGS over the harness's settings; a fresh database per scenario.
PG_BASE=""
PG_DIR=""
pg_up() {
	[ -n "$PG_BASE" ] && return 0
	local out="$TMP/pgcluster.out" args=() kv i
	for kv in $BENCH_PG_SETTINGS; do args+=(--set "$kv"); done
	$PY "$REPO/tests/pgcluster.py" serve --db otpd_bench "${args[@]}" >"$out" 2>"$TMP/pgcluster.err" &
	PG_PID=$!
	PIDS+=("$PG_PID")
	for ((i = 0; i < 1200; i++)); do
		grep -q '^PGCLUSTER_DIR=' "$out" && break
		kill -0 "$PG_PID" 2>/dev/null || die "PostgreSQL did not start: $(tail -3 "$TMP/pgcluster.err")"
		sleep 0.05
	done
	PG_BASE=$(sed -n 's#^DATABASE_URL=\(postgres://[^/]*\)/.*#\1#p' "$out")
	PG_DIR=$(sed -n 's#^PGCLUSTER_DIR=##p' "$out")
	[ -n "$PG_BASE" ] && [ -n "$PG_DIR" ] || die "PostgreSQL: no URL in $out"
	PG_VERSION=$(psql "$PG_BASE/postgres" -Atc 'SHOW server_version')
	PG_SHOW=$(psql "$PG_BASE/postgres" -Atc "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'wal_level', 'full_page_writes')")
	log "PostgreSQL $PG_VERSION at $PG_BASE ($PG_SHOW), data in $PG_DIR"
	record "{\"scenario\":\"pg-server\",\"run\":1,\"version\":\"$PG_VERSION\",\"settings\":\"$PG_SHOW\"}"
}

pg_db() { # name -> PG_URL: a new, empty database
	pg_up
	psql "$PG_BASE/postgres" -qc "CREATE DATABASE $1" >/dev/null || die "CREATE DATABASE $1"
	PG_URL="$PG_BASE/$1"
}

# The nodes of a pg scenario: start_nodes name url count -> NODE_PIDS, NODE_URLS
start_nodes() {
	local name=$1 url=$2 n=$3 i
	NODE_PIDS=""
	NODE_URLS=""
	for ((i = 1; i <= n; i++)); do
		start_otpd "$name-node$i" "$url" kavenegar "$PROVIDER_URL"
		NODE_PIDS="$NODE_PIDS $OTPD_PID"
		NODE_URLS="$NODE_URLS $OTPD_URL"
		NODE_NAMES[$OTPD_PID]=$OTPD_NAME
		record "{\"scenario\":\"ready-pg\",\"run\":$i,\"name\":\"$name\",\"ready_ms\":$READY_MS}"
	done
}

stop_nodes() {
	local p
	for p in $NODE_PIDS; do
		OTPD_PID=$p
		OTPD_NAME=${NODE_NAMES[$p]}
		stop_otpd
	done
	OTPD_PIDS=""
}

declare -A NODE_NAMES

# scenario_pg scen nodes kind(send|verify): one node straight, or several
# behind nginx (round-robin, keep-alive), on a fresh database.
scenario_pg() {
	local scen=$1 nodes=$2 kind=$3 dir="$TMP/$1" url check lb_pid="" p ups=""
	mkdir -p "$dir"
	provider_up
	pg_db "${scen//-/_}"
	local path=/api/v1/usr/otp
	[ "$kind" = verify ] && path=$path/verify
	log "== $scen: POST $path on PostgreSQL, $nodes node(s)$([ "$nodes" -gt 1 ] && echo " behind nginx" || true)"
	if [ "$kind" = verify ]; then
		check=$(((BENCH_RUNS + 2) * BENCH_VERIFY_POOL))
		prefill "$PG_URL" "$SECRET" --codes $((check + 1))
	fi
	start_nodes "$scen" "$PG_URL" "$nodes"
	url=${NODE_URLS# }
	if [ "$nodes" -gt 1 ]; then
		for p in $NODE_URLS; do ups="${ups}server ${p#http://};"; done
		NGINX_UPSTREAMS=$ups NGINX_CHECK=/readyz start_nginx "$scen-lb" nginx-lb.conf "$BENCH_LB_WORKERS"
		lb_pid=$NGINX_PID
		url="http://127.0.0.1:$NGINX_PORT"
	fi
	OTPD_PIDS=$NODE_PIDS
	if [ "$kind" = send ]; then
		check_send "$url" +989129999999
		SEND_NEXT=0
		send_runs "$scen" "$url"
	else
		check_verify "$url" "$check"
		verify_runs "$scen" "$url" "$BENCH_VERIFY_POOL"
		[ "$PROFILE" = 1 ] && [ "$nodes" = 1 ] && profile_pg "$scen" "$url" $(((BENCH_RUNS + 1) * BENCH_VERIFY_POOL))
	fi
	[ -n "$lb_pid" ] && stop_pid "$lb_pid"
	stop_nodes
}

# profile_pg name url start: one more verify run with perf on otpd and on
# every PostgreSQL process at once: where a PostgreSQL verify's CPU goes.
profile_pg() {
	local name=$1 url=$2 start=$3 data="$TMP/perf-$1.data" txt="$REPO/docs/perf-$1.txt" pm pids rps
	perf_works || { log "perf cannot sample here: no profile of $name"; return 0; }
	pm=$(head -1 "$PG_DIR/data/postmaster.pid")
	pids="$OTPD_PIDS $pm $(pgrep -P "$pm" | tr '\n' ' ')"
	pids=$(echo $pids | tr ' ' ',')
	log "profiling $name: perf record on otpd and PostgreSQL for ${BENCH_DURATION}s"
	perf record -q -e cpu-clock -F 499 -g -p "$pids" -o "$data" -- sleep "$BENCH_DURATION" \
		>/dev/null 2>"$TMP/perf-$name.err" &
	local perf_pid=$!
	PIDS+=("$perf_pid")
	wrk_run "$name-profiled" 0 "$BENCH_THREADS" "$BENCH_CONNS" "$BENCH_DURATION" verify.lua "$url" 2 -- \
		"$start" "$BENCH_VERIFY_POOL" "$BENCH_THREADS" $VERIFY_ARGS
	wait "$perf_pid" || true
	rps=$(printf '%s' "$WRK_JSON" | sed -n 's/.*"rps":\([0-9.]*\).*/\1/p')
	local strip='s/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'
	set +o pipefail
	{
		echo "# CPU profile of a verify on PostgreSQL: otpd and every PostgreSQL process ($(date -u +%Y-%m-%dT%H:%MZ), commit ${COMMIT:0:12}, $COMMIT_NOTE)"
		echo "# perf record -e cpu-clock -F 499 -g -p <otpd>,<postmaster and its children>, during one ${BENCH_DURATION}s run of"
		echo "#   wrk -t$BENCH_THREADS -c$BENCH_CONNS -s bench/verify.lua  (${rps} rps while profiled: perf slows it)"
		echo "# Generated by bench/run.sh with PROFILE=1 (the $name scenario)."
		echo
		echo "## By process (otpd's threads are store, http, ...; PostgreSQL's are postgres)"
		perf report -i "$data" --stdio --no-children --sort comm -g none 2>/dev/null |
			grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -12
		echo
		echo "## By process and binary: user space (otpd, postgres, libc, ...) and the kernel (syscalls, TCP, scheduling, fsync)"
		perf report -i "$data" --stdio --no-children --sort comm,dso -g none --percent-limit 0.5 2>/dev/null |
			grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -24
		echo
		echo "## Self time, top 50"
		perf report -i "$data" --stdio --no-children --sort comm,dso,symbol -g none --percent-limit 0.3 2>/dev/null |
			grep -v '^#' | grep -v '^$' | sed -E "$strip" | head -50
	} >"$txt"
	set -o pipefail
	log "wrote ${txt#"$REPO"/}"
}

# ---------------------------------------------------------------- run

log "scenarios: $BENCH_SCENARIOS; $BENCH_RUNS x ${BENCH_DURATION}s, wrk -t$BENCH_THREADS -c$BENCH_CONNS; temp $TMP"
has static && scenario_static
has send && scenario_send send kavenegar
has send-console && scenario_send send-console console
has verify && scenario_verify
has slow && scenario_slow
has large && scenario_large
has memory && scenario_memory
has pg-send && scenario_pg pg-send 1 send
has pg-verify && scenario_pg pg-verify 1 verify
has pg3-send && scenario_pg pg3-send "$BENCH_PG_NODES" send
has pg3-verify && scenario_pg pg3-verify "$BENCH_PG_NODES" verify

META="$TMP/meta.json"
$PY - "$META" <<EOF
import json, sys, subprocess, os
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
model = ""
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"): model = l.split(":", 1)[1].strip(); break
mem = ""
for l in open("/proc/meminfo"):
    if l.startswith("MemTotal"): mem = "%.1f GiB" % (int(l.split()[1]) / 1048576); break
json.dump({
  "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
  "nproc": sh("nproc"), "cpu": model, "kernel": sh("uname -sr"), "mem": mem,
  "commit": "$COMMIT", "commit_note": "$COMMIT_NOTE",
  "command": ("$OVERRIDES" + "$BENCH_CMD").strip(),
  "runs": $BENCH_RUNS, "duration": $BENCH_DURATION, "warmup": $BENCH_WARMUP,
  "threads": $BENCH_THREADS, "conns": $BENCH_CONNS,
  "nginx_workers": $BENCH_NGINX_WORKERS, "provider_workers": $BENCH_PROVIDER_WORKERS,
  "verify_pool": $BENCH_VERIFY_POOL, "slow_conns": $BENCH_SLOW_CONNS, "slow_delay": $BENCH_SLOW_DELAY,
  "large_codes": $BENCH_LARGE_CODES, "large_users": $BENCH_LARGE_USERS,
  "idle_conns": $BENCH_IDLE_CONNS, "soak": $BENCH_SOAK,
  "clients": "$BENCH_CLIENTS", "pg_nodes": $BENCH_PG_NODES, "lb_workers": $BENCH_LB_WORKERS,
  "quiet": $BENCH_QUIET, "quiet_wait": $BENCH_QUIET_WAIT,
  "fs": sh("stat -f -c %T '$TMP'"),
  "versions": {"wrk": sh("wrk -v 2>&1 | head -1 | cut -d' ' -f2"),
               "nginx": sh("nginx -v 2>&1 | cut -d/ -f2"),
               "sqlite": sh("sqlite3 --version | cut -d' ' -f1")},
}, open(sys.argv[1], "w"), indent=1)
EOF

mkdir -p "$REPO/build-bench"
cp "$RESULTS" "$REPO/build-bench/bench-results-$STAMP.jsonl"
cp "$META" "$REPO/build-bench/bench-meta-$STAMP.json"
if [ "$BENCH_WRITE_DOC" = 1 ]; then
	$PY "$BENCH/report.py" "$RESULTS" "$META" --doc "$REPO/$BENCH_DOC"
	log "wrote $BENCH_DOC (raw results: build-bench/bench-results-$STAMP.jsonl)"
else
	$PY "$BENCH/report.py" "$RESULTS" "$META"
	log "not all scenarios ran: $BENCH_DOC left alone (BENCH_WRITE_DOC=1 to write it anyway); raw: build-bench/bench-results-$STAMP.jsonl"
fi
