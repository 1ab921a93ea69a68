#!/usr/bin/env bash
# Ward vs Postfix, end to end, on one machine, in one run.
#
# Postfix's smtp-source sends MESSAGES messages (SIZE bytes of payload each)
# over SESSIONS parallel SMTP sessions (-d: many messages per connection)
# through the system under test to Postfix's smtp-sink, first through Ward,
# then through a private Postfix relay configured the same way (or the other
# way round on even runs). For each system it reports
#
#   accepted msg/s   MESSAGES / time until smtp-source finished (every
#                    message got its 250, so it is durable in the relay)
#   delivered msg/s  MESSAGES / time from the start of smtp-source until the
#                    sink had received all MESSAGES (end to end)
#
# and the ratio Ward/Postfix. Goal: Ward >= 3x Postfix end to end, with Ward's
# flush-before-250 and at-rest encryption on (they can't be turned off) and
# Postfix's default fsync-before-250 kept.
#
# Counting deliveries at the sink: each system gets its own fresh smtp-sink
# per run, started with
#   -c   running counters ("sess=.. quit=.. mesg=N\r", flushed on every
#        message) that a small poller reads every 5 ms to timestamp the
#        moment the sink has seen MESSAGES messages;
#   -D   a dump of every transaction (X-Rcpt-Args lines) in the run's temp
#        dir, checked afterwards.
# smtp-source runs with -N, so every message has its own recipient
# (<1rcpt@example.com>, <2rcpt@...>, ...). After a short settle time the run
# passes only if the sink counted exactly MESSAGES messages and its dump holds
# MESSAGES transactions with MESSAGES distinct recipients: nothing lost, nothing duplicated. Otherwise the script
# exits non-zero.
#
# The Postfix relay is a private instance (own config_directory,
# queue_directory and data_directory under the temp dir; the system's Postfix,
# if any, is neither used nor touched). Its non-default settings are listed in
# PF_SETTINGS below and printed in the output, each with its reason. Default
# process limits, destination concurrency (20, like Ward's
# delivery.destination_concurrency), in_flow_delay and fsync behaviour are kept.
#
# Usage (as root: Postfix's master must start as root):
#   bench/compare-postfix.sh
#   MESSAGES=5000 SESSIONS=20 SIZE=10240 RUNS=3 bench/compare-postfix.sh
#   ONLY=postfix bench/compare-postfix.sh       # or ONLY=ward
#   WARD_BIN=/path/to/ward bench/compare-postfix.sh   # skip cargo build
#
# Environment:
#   MESSAGES (5000)  SESSIONS (20)  SIZE (10240, payload bytes)  RUNS (1;
#   more prints each run and the median)  ONLY (ward|postfix)  WARD_BIN
#   TIMEOUT (300 s per system and run)  SETTLE (1 s, wait for late duplicates)
#   BENCH_TMPDIR (parent of the temp dir; default $TMPDIR or /tmp: put it on
#   the disk you want the queues on)  DUMPDIR (where smtp-sink writes its
#   dumps, default the temp dir; e.g. a tmpfs; as root it must be writable
#   by nobody)  KEEP_TMP (1 keeps the temp
#   dir and logs)
#
# The machine should be otherwise idle: both systems are CPU-bound on small
# machines, so a compile running beside the bench moves the numbers (the load
# average is printed). Use RUNS=3 or more and read the median.
#
# Needs: bash 5, postfix (smtp-source, smtp-sink, postconf), openssl, python3,
# cargo (unless WARD_BIN is given). Uses only 127.0.0.1 and free ports.

set -Eeuo pipefail
export LC_ALL=C # EPOCHREALTIME and awk must use '.' as the decimal point

MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-10240}
RUNS=${RUNS:-1}
ONLY=${ONLY:-}
TIMEOUT=${TIMEOUT:-300}
SETTLE=${SETTLE:-1}
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SENDER=sender@example.org
RECIPIENT=rcpt@example.com

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in MESSAGES SESSIONS SIZE RUNS TIMEOUT SETTLE; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || [[ $v == SETTLE && ${!v} =~ ^[0-9]+$ ]] ||
        die "$v must be a positive integer (got '${!v}')"
done
case "$ONLY" in
"") SYSTEMS=(ward postfix) ;;
ward | postfix) SYSTEMS=("$ONLY") ;;
*) die "ONLY must be 'ward' or 'postfix' (got '$ONLY')" ;;
esac
want() { [[ " ${SYSTEMS[*]} " == *" $1 "* ]]; }

need=(smtp-source smtp-sink python3)
want postfix && need+=(postfix postconf openssl)
for c in "${need[@]}"; do
    command -v "$c" >/dev/null || die "'$c' not found (apt-get install postfix openssl python3)"
done
if want postfix && [[ $EUID -ne 0 ]]; then
    die "the Postfix relay needs root (its master starts as root); run as root or with ONLY=ward"
fi
# smtp-sink refuses to run as root without -u.
SINK_USER=()
[[ $EUID -eq 0 ]] && SINK_USER=(-u nobody)

# ---------------------------------------------------------------------------
# Temp dir and cleanup: everything we start is recorded and stopped on exit.

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/ward-bench.XXXXXX")
chmod 755 "$WORK" # Postfix daemons (user postfix) and smtp-sink (nobody) must enter it
BG_PIDS=()        # smtp-sink, ward, pollers, smtp-source
PF_DIRS=()        # config directories of Postfix instances we started

stop_pid() { # pid seconds: SIGTERM, wait, then SIGKILL
    local pid=$1 secs=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

stop_postfix() { # config_dir
    local etc=$1 pidfile i master
    pidfile="$(dirname "$etc")/spool/pid/master.pid"
    master=$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)
    postfix -c "$etc" stop >/dev/null 2>&1 || true
    if [[ -n $master ]]; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$master" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$master" 2>/dev/null && { postfix -c "$etc" abort >/dev/null 2>&1 || true; }
    fi
    local d keep=()
    for d in "${PF_DIRS[@]}"; do [[ $d == "$etc" ]] || keep+=("$d"); done
    PF_DIRS=("${keep[@]}")
}

forget_pid() { # pid: no longer ours to stop
    local p keep=()
    for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for etc in "${PF_DIRS[@]}"; do stop_postfix "$etc"; done
    for pid in "${BG_PIDS[@]}"; do stop_pid "$pid" 50; done
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

smtp_ready() { # host port: true once the server sends its 220 greeting
    (
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        IFS= read -r -t 5 line <&3 || exit 1
        printf 'QUIT\r\n' >&3
        [[ $line == 220* ]]
    ) 2>/dev/null
}

wait_ready() { # what port seconds [pid]: wait for the greeting, fail early if pid died
    local what=$1 port=$2 secs=$3 pid=${4:-} deadline
    deadline=$((SECONDS + secs))
    until smtp_ready 127.0.0.1 "$port"; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "$what exited before accepting connections"
            return 1
        fi
        ((SECONDS < deadline)) || {
            log "$what did not greet on 127.0.0.1:$port within ${secs}s"
            return 1
        }
        sleep 0.1
    done
}

# Prints "ready" once running, then waits until smtp-sink's -c counter (last
# "mesg=N\r" record) reaches N and prints "<epoch seconds> <count>", or
# "timeout <count>" and exits 1.
WAITER=$(
    cat <<'EOF'
import os, re, sys, time
path, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + timeout
record = re.compile(rb"mesg=(\d+)\r")
fd = os.open(path, os.O_RDONLY)
count = 0
print("ready", flush=True)
while True:
    size = os.fstat(fd).st_size
    if size:
        found = record.findall(os.pread(fd, 128, max(0, size - 128)))
        if found:
            count = int(found[-1])
    if count >= n:
        print(f"{time.time():.6f} {count}")
        sys.exit(0)
    if time.time() > deadline:
        print(f"timeout {count}")
        sys.exit(1)
    time.sleep(0.005)
EOF
)

sink_count() { # counter file: the sink's current message count
    local last
    last=$(tr '\r' '\n' <"$1" | grep -o 'mesg=[0-9]*' | tail -n 1 || true)
    echo "${last#mesg=}"
}

div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

show_tail() { # file: last lines of a log, for failures
    [[ -s $1 ]] || return 0
    log "--- last lines of $1"
    tail -n 20 "$1" | sed 's/^/    /' >&2
}

start_sink() { # dir port
    local dir=$1 port=$2 pid
    mkdir -p "$dir"
    [[ $EUID -eq 0 ]] && chown nobody "$dir"
    smtp-sink "${SINK_USER[@]}" -c -D "${DUMPDIR:-$dir}/dump-$port" "127.0.0.1:$port" 1024 \
        >"$dir/counter" 2>"$dir/stderr" &
    pid=$!
    BG_PIDS+=("$pid")
    SINK_PID=$pid
    wait_ready smtp-sink "$port" 10 "$pid" || {
        show_tail "$dir/stderr"
        return 1
    }
}

# ---------------------------------------------------------------------------
# Ward.

WARD_VERSION=
prepare_ward() {
    if [[ -z ${WARD_BIN:-} ]]; then
        log "building ward (cargo build --release)"
        (cd "$ROOT" && cargo build --release) >&2
        local target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target="$ROOT/$target"
        WARD_BIN="$target/release/ward"
    fi
    [[ -x $WARD_BIN ]] || die "ward binary not found at '$WARD_BIN' (set WARD_BIN)"
    WARD_VERSION=$("$WARD_BIN" --version 2>/dev/null | head -n 1 || true)
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
    WARD_VERSION="${WARD_VERSION:-ward} ${rev:+(git $rev)}"
}

# The Ward configuration: everything else is Ward's default (max_connections
# 500, destination_concurrency 20, max_messages_per_connection 100, ...).
start_ward() { # dir port sink_port
    local dir=$1 port=$2 sink_port=$3
    mkdir -p "$dir/data"
    cat >"$dir/ward.toml" <<EOF
# Written by bench/compare-postfix.sh
[server]
hostname = "bench-ward.localdomain"
data_dir = "$dir/data"

[[listener]]
name = "bench"
address = "127.0.0.1:$port"
tls = "starttls"

[relay]
networks = ["127.0.0.0/8"]

[delivery]
smart_host = "[127.0.0.1]:$sink_port"
tls_policy = "may"
EOF
    "$WARD_BIN" serve --config "$dir/ward.toml" >"$dir/ward.log" 2>&1 &
    WARD_PID=$!
    BG_PIDS+=("$WARD_PID")
    wait_ready ward "$port" 60 "$WARD_PID" || {
        show_tail "$dir/ward.log"
        return 1
    }
}

stop_ward() { stop_pid "$WARD_PID" 45; }

# ---------------------------------------------------------------------------
# Postfix: a private instance configured like Ward above.

# Every main.cf setting that differs from `postconf -d`, with its reason.
# (@DIR@ and @SINK@ are filled in per run.)
PF_SETTINGS=(
    "queue_directory = @DIR@/spool|private instance: own queue in the temp dir"
    "data_directory = @DIR@/data|private instance: own data dir in the temp dir"
    "maillog_file = @DIR@/postfix.log|log to a file via postlogd (Ward logs to a file too; no syslogd needed)"
    "maillog_file_prefixes = @DIR@|allow that log file path"
    "compatibility_level = 3.6|as Debian's shipped main.cf (modern defaults, no compatibility warnings)"
    "myhostname = bench-postfix.localdomain|like Ward's server.hostname"
    "inet_interfaces = 127.0.0.1|loopback only"
    "inet_protocols = ipv4|loopback only; everything here is 127.0.0.1"
    "alias_maps =|no local delivery in a relay (the default's nis:mail.aliases only logs NIS warnings)"
    "mynetworks = 127.0.0.0/8|relay for loopback clients, like Ward's relay.networks"
    "relayhost = [127.0.0.1]:@SINK@|smart host = the sink, like Ward's delivery.smart_host"
    "smtp_tls_security_level = may|opportunistic outbound TLS, like Ward's delivery.tls_policy = \"may\""
    "smtpd_tls_security_level = may|offer STARTTLS, like Ward's listener tls = \"starttls\""
    "smtpd_tls_cert_file = @DIR@/tls/cert.pem|self-signed P-256 certificate (Ward generates one too)"
    "smtpd_tls_key_file = @DIR@/tls/key.pem|its key"
)
PF_MASTER_NOTE="master.cf: the stock service list with chroot 'n' (upstream default; Debian's packaged master.cf says 'y') and smtpd on 127.0.0.1:<port> instead of *:25"

POSTFIX_VERSION=
prepare_postfix() {
    POSTFIX_VERSION=$(postconf -d -h mail_version)
}

start_postfix() { # dir port sink_port
    local dir=$1 port=$2 sink_port=$3 s setting
    mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/tls"
    chown postfix "$dir/data"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=bench-postfix.localdomain \
        -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" >/dev/null 2>&1
    chmod 600 "$dir/tls/key.pem"
    {
        echo "# Written by bench/compare-postfix.sh; everything not listed is Postfix's default."
        for s in "${PF_SETTINGS[@]}"; do
            setting=${s%%|*}
            setting=${setting//@DIR@/$dir}
            setting=${setting//@SINK@/$sink_port}
            echo "# ${s#*|}"
            echo "$setting"
        done
    } >"$dir/etc/main.cf"
    cat >"$dir/etc/master.cf" <<EOF
# Written by bench/compare-postfix.sh: the stock services, not chrooted.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$port inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    # `check` creates the queue directories with the right owners.
    postfix -c "$dir/etc" check >&2 || {
        show_tail "$dir/postfix.log"
        return 1
    }
    PF_DIRS+=("$dir/etc")
    postfix -c "$dir/etc" start >/dev/null 2>&1 || {
        show_tail "$dir/postfix.log"
        return 1
    }
    wait_ready postfix "$port" 30 || {
        show_tail "$dir/postfix.log"
        return 1
    }
}

# ---------------------------------------------------------------------------
# One system, one run.

declare -A ACC E2E # system -> space-separated per-run rates
declare -a ROWS
FAILED=0

run_one() { # system run
    local system=$1 run=$2 dir port sink_port wpid spid src_rc=0 w_rc=0 t0 t_src t_e2e
    local got total uniq final dump
    dir="$WORK/$system-$run"
    mkdir -p "$dir"
    sink_port=$(free_port)
    start_sink "$dir/sink" "$sink_port"
    port=$(free_port)
    log "run $run: $system on 127.0.0.1:$port -> smtp-sink on 127.0.0.1:$sink_port"
    case $system in
    ward) start_ward "$dir" "$port" "$sink_port" ;;
    postfix) start_postfix "$dir" "$port" "$sink_port" ;;
    esac

    python3 -c "$WAITER" "$dir/sink/counter" "$MESSAGES" "$TIMEOUT" >"$dir/waiter.out" &
    wpid=$!
    BG_PIDS+=("$wpid")
    # Start the clock only once the poller runs (Python takes a while to start).
    until [[ -s $dir/waiter.out ]]; do
        kill -0 "$wpid" 2>/dev/null || die "the delivery poller did not start"
        sleep 0.01
    done
    t0=$EPOCHREALTIME
    timeout "$TIMEOUT" smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -N \
        -f "$SENDER" -t "$RECIPIENT" "127.0.0.1:$port" >"$dir/source.log" 2>&1 &
    spid=$!
    BG_PIDS+=("$spid")
    wait "$spid" || src_rc=$?
    t_src=$EPOCHREALTIME
    forget_pid "$spid"
    if ((src_rc != 0)); then
        log "$system: smtp-source failed (exit $src_rc)"
        show_tail "$dir/source.log"
        stop_pid "$wpid" 1
    fi
    wait "$wpid" || w_rc=$?
    forget_pid "$wpid"
    read -r t_e2e got < <(tail -n 1 "$dir/waiter.out") || true
    ((SETTLE > 0)) && sleep "$SETTLE"

    final=$(sink_count "$dir/sink/counter")
    dump="${DUMPDIR:-$dir/sink}/dump-$sink_port"
    total=$(grep -c '^X-Rcpt-Args: ' "$dump" 2>/dev/null || true)
    total=${total:-0}
    uniq=$({ grep '^X-Rcpt-Args: ' "$dump" 2>/dev/null || true; } | sort -u | wc -l)
    rm -f "$dump"

    case $system in
    ward) stop_ward ;;
    postfix) stop_postfix "$dir/etc" ;;
    esac
    stop_pid "$SINK_PID" 5

    local ok=1 acc e2e src_s e2e_s
    if ((src_rc != 0 || w_rc != 0)); then ok=0; fi
    if [[ $total -ne $MESSAGES || $uniq -ne $MESSAGES || ${final:-0} -ne $MESSAGES ]]; then ok=0; fi
    if ((ok)); then
        src_s=$(sub "$t_src" "$t0")
        e2e_s=$(sub "$t_e2e" "$t0")
        acc=$(div "$MESSAGES" "$src_s")
        e2e=$(div "$MESSAGES" "$e2e_s")
        ACC[$system]+="$acc "
        E2E[$system]+="$e2e "
        ROWS+=("$(printf '%-4s %-8s %15s %16s %10s %13s %9s' "$run" "$system" "$acc" "$e2e" "$src_s" "$e2e_s" "$total/$uniq")")
        log "$system: accepted $acc msg/s, delivered $e2e msg/s end to end"
    else
        FAILED=1
        ROWS+=("$(printf '%-4s %-8s %15s %16s %10s %13s %9s' "$run" "$system" FAILED - - - "${total:-0}/$uniq")")
        log "$system: FAILED: smtp-source exit $src_rc; sink saw ${final:-0} messages" \
            "(waiter: ${t_e2e:-?} ${got:-}); dump: $total transactions, $uniq distinct recipients; expected $MESSAGES"
        show_tail "$dir/sink/stderr"
        [[ $system == ward ]] && show_tail "$dir/ward.log"
        [[ $system == postfix ]] && show_tail "$dir/postfix.log"
    fi
    # Free the disk between runs (the dump alone is ~MESSAGES x SIZE).
    [[ $KEEP_TMP == 1 ]] || rm -rf "$dir"
}

# ---------------------------------------------------------------------------
# Main.

want ward && prepare_ward
want postfix && prepare_postfix

FS_TYPE=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK" 2>/dev/null || echo unknown)
echo "Ward vs Postfix end to end: $MESSAGES messages x $SIZE bytes payload, $SESSIONS sessions (smtp-source -d), $RUNS run(s)"
echo "machine: $(nproc) CPUs, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg); temp dir $WORK on $FS_TYPE"
want ward && echo "ward: $WARD_VERSION ($WARD_BIN)"
if want postfix; then
    echo "postfix: $POSTFIX_VERSION, private instance; non-default main.cf settings:"
    for s in "${PF_SETTINGS[@]}"; do
        printf '  %-52s # %s\n' "${s%%|*}" "${s#*|}"
    done
    echo "  $PF_MASTER_NOTE"
fi
echo

for ((run = 1; run <= RUNS; run++)); do
    order=("${SYSTEMS[@]}")
    # Alternate the order so neither system always runs on a warmer machine.
    if ((run % 2 == 0 && ${#order[@]} == 2)); then order=("${order[1]}" "${order[0]}"); fi
    for system in "${order[@]}"; do
        run_one "$system" "$run"
    done
done

echo
printf '%-4s %-8s %15s %16s %10s %13s %9s\n' run system "accepted msg/s" "delivered msg/s" "source s" "end-to-end s" "sink/uniq"
printf '%s\n' "${ROWS[@]}"

declare -A MED_ACC MED_E2E
echo
if ((RUNS > 1)); then echo "median over $RUNS runs:"; fi
printf '%-8s %15s %16s\n' system "accepted msg/s" "delivered msg/s"
for system in "${SYSTEMS[@]}"; do
    if [[ -n ${E2E[$system]:-} ]]; then
        # shellcheck disable=SC2086 # word splitting wanted
        MED_ACC[$system]=$(median ${ACC[$system]})
        # shellcheck disable=SC2086
        MED_E2E[$system]=$(median ${E2E[$system]})
        printf '%-8s %15s %16s\n' "$system" "${MED_ACC[$system]}" "${MED_E2E[$system]}"
    else
        printf '%-8s %15s %16s\n' "$system" - -
    fi
done
if [[ -n ${MED_E2E[ward]:-} && -n ${MED_E2E[postfix]:-} ]]; then
    r_acc=$(awk -v a="${MED_ACC[ward]}" -v b="${MED_ACC[postfix]}" 'BEGIN { printf "%.2f", a / b }')
    r_e2e=$(awk -v a="${MED_E2E[ward]}" -v b="${MED_E2E[postfix]}" 'BEGIN { printf "%.2f", a / b }')
    met=$(awk -v r="$r_e2e" 'BEGIN { print (r >= 3) ? "met" : "NOT met" }')
    echo "ratio ward/postfix: accepted ${r_acc}x, end to end ${r_e2e}x (goal >= 3x end to end: $met)"
fi

if ((FAILED)); then
    log "some messages were lost or duplicated, or a run failed (see above)"
    exit 1
fi
