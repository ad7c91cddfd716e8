#!/usr/bin/env bash
# kcat scenarios of the compatibility matrix (see CONTRACT.md): metadata, produce, consume,
# consume-group, commit-resume. Needs BOOTSTRAP, EDDY and WORK; kcat comes from install-js.sh.
#
# Prints one `MATRIX<TAB>kcat<TAB><scenario><TAB>ok|FAIL<TAB><detail>` line per scenario on
# stdout; kcat's own output goes to files under $WORK and its diagnostics to stderr. Every kcat
# call runs under `timeout`, capped by a common deadline, so the program ends well within 240 s.
set -uo pipefail

CLIENT=kcat
SCENARIOS=(metadata produce consume consume-group commit-resume)
TOPIC="compat-$CLIENT"
GROUP="compat-$CLIENT-g"
PARTITIONS=4
TOTAL=10000
FIRST_N=6000
# Constant headers: kcat's -H applies the same headers to every record (see CONTRACT.md).
HDR_SRC="src=kcat-compat"
HDR_FMT="format=tsv"
# partition, offset, key, value, headers (headers print as name=value,name=value).
FMT='%p\t%o\t%k\t%s\t%h\n'

WORK="${WORK:-$(mktemp -d)}"
EDDY="${EDDY:-eddy}"
T0=$SECONDS
declare -A RESULT=()

DEADLINE=225 # seconds after start by which every kcat call has ended
# tmo N: N seconds, but no later than the DEADLINE (at least 1 s).
tmo() { local left=$((DEADLINE - (SECONDS - T0))); ((left < $1)) && echo $((left > 1 ? left : 1)) || echo "$1"; }
log() { echo "[kcat.sh +$((SECONDS - T0))s] $*" >&2; }
report() { # scenario ok|FAIL detail
    local detail="${3//$'\t'/ }"
    detail="${detail//$'\n'/ }"
    RESULT[$1]=$2
    printf 'MATRIX\t%s\t%s\t%s\t%s\n' "$CLIENT" "$1" "$2" "${detail:0:300}"
}
finish() {
    local s rc=0
    for s in "${SCENARIOS[@]}"; do
        if [[ -z "${RESULT[$s]:-}" ]]; then report "$s" FAIL "not run"; fi
        [[ "${RESULT[$s]}" == ok ]] || rc=1
    done
    log "done in $((SECONDS - T0))s"
    exit $rc
}
exit_text() { [[ $1 == 124 ]] && echo "timed out" || echo "exit $1"; }
# Last lines of a file, for FAIL details.
last_err() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 2 | tr '\n' ' '; }

if [[ -z "${BOOTSTRAP:-}" ]]; then
    for s in "${SCENARIOS[@]}"; do report "$s" FAIL "BOOTSTRAP is not set"; done
    finish
fi
if ! command -v kcat >/dev/null; then
    for s in "${SCENARIOS[@]}"; do report "$s" FAIL "kcat not installed (run install-js.sh)"; done
    finish
fi
log "$(kcat -V 2>&1 | grep -m1 '^Version') against $BOOTSTRAP"

# The check scripts below (python3) share this: the expected record i.
python_common='
import json, sys
TOTAL = int(sys.argv[1])
def key_of(i): return "k%d" % (i % 97)
def value_of(i): return json.dumps({"i": i, "pad": "x" * 80}, separators=(",", ":"))
HEADERS = sys.argv[2]
class Fail(Exception): pass
def check(c, msg):
    if not c: raise Fail(msg)
def parse(path, who):
    """Lines partition<TAB>offset<TAB>key<TAB>value<TAB>headers -> list of dicts."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            parts = line.split("\t")
            check(len(parts) == 5, "%s line %d: %d fields: %r" % (who, n, len(parts), line[:120]))
            p, o, k, v, h = parts
            out.append({"p": int(p), "o": int(o), "k": k, "v": v, "h": h})
    return out
def check_records(recs, who):
    """Each record matches what was produced; offsets increase per partition; key -> one partition."""
    last, key_part = {}, {}
    for r in recs:
        where = "%s p%d/o%d" % (who, r["p"], r["o"])
        check(r["p"] in range(4), "%s: bad partition" % where)
        check(r["o"] > last.get(r["p"], -1), "%s: offset not after %d" % (where, last.get(r["p"], -1)))
        last[r["p"]] = r["o"]
        try:
            i = json.loads(r["v"])["i"]
        except Exception:
            raise Fail("%s: undecodable value %r" % (where, r["v"][:80]))
        check(isinstance(i, int) and 0 <= i < TOTAL, "%s: bad i %r" % (where, i))
        check(r["v"] == value_of(i), "%s: value of record %d differs" % (where, i))
        check(r["k"] == key_of(i), "%s: key %r, expected %r" % (where, r["k"], key_of(i)))
        check(r["h"] == HEADERS, "%s: headers %r, expected %r" % (where, r["h"], HEADERS))
        check(key_part.setdefault(r["k"], r["p"]) == r["p"],
              "%s: key %s also on partition %d" % (where, r["k"], key_part[r["k"]]))
        r["i"] = i
    return key_part
def check_union(recs):
    """Exactly the TOTAL records, each once; per partition offsets 0..n-1 in production order."""
    check(len(recs) == TOTAL, "%d records, expected %d" % (len(recs), TOTAL))
    seen = set()
    for r in recs:
        check(r["i"] not in seen, "record %d twice" % r["i"])
        seen.add(r["i"])
    check(len(seen) == TOTAL, "%d distinct records" % len(seen))
    by_p = {}
    for r in recs:
        by_p.setdefault(r["p"], []).append(r)
    for p, rs in by_p.items():
        rs.sort(key=lambda r: r["o"])
        check([r["o"] for r in rs] == list(range(len(rs))),
              "partition %d: offsets are not exactly 0..%d" % (p, len(rs) - 1))
        check(all(a["i"] < b["i"] for a, b in zip(rs, rs[1:])),
              "partition %d: records out of production order" % p)
    return {p: len(rs) for p, rs in sorted(by_p.items())}
'
HEADERS="$HDR_SRC,$HDR_FMT"
pycheck() { # script args... ; prints the detail line; exit status = pass/fail
    python3 -c "$python_common
try:
$(sed 's/^/    /' <<<"$1")
except Fail as e:
    print(e); sys.exit(1)
except Exception as e:
    print(\"check crashed: %s: %s\" % (type(e).__name__, e)); sys.exit(1)
" "$TOTAL" "$HEADERS" "${@:2}"
}

# ---- metadata -----------------------------------------------------------------------------------
scenario_metadata() {
    local rc=0
    timeout "$(tmo 30)" "$EDDY" topic create "$TOPIC" --partitions "$PARTITIONS" --bootstrap "$BOOTSTRAP" \
        >"$WORK/create.out" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        report metadata FAIL "eddy topic create $(exit_text $rc): $(last_err "$WORK/create.out")"
        return
    fi
    timeout "$(tmo 20)" kcat -b "$BOOTSTRAP" -L -t "$TOPIC" >"$WORK/metadata.out" 2>"$WORK/metadata.err" || rc=$?
    if [[ $rc != 0 ]]; then
        report metadata FAIL "kcat -L $(exit_text $rc): $(last_err "$WORK/metadata.err")"
        return
    fi
    cat "$WORK/metadata.out" >&2
    local header parts
    header=$(grep -c "topic \"$TOPIC\" with $PARTITIONS partitions:" "$WORK/metadata.out")
    parts=$(grep -Ec '^\s+partition [0-9]+, leader [0-9]+' "$WORK/metadata.out")
    if [[ "$header" == 1 && "$parts" == "$PARTITIONS" ]] && ! grep -q 'Error\|error' "$WORK/metadata.out"; then
        report metadata ok "kcat -L -t lists $TOPIC with $parts partitions, each with a leader"
    else
        report metadata FAIL "kcat -L -t: header lines $header, partition lines $parts: $(tr '\n' ' ' <"$WORK/metadata.out")"
    fi
}

# ---- produce ------------------------------------------------------------------------------------
scenario_produce() {
    python3 -c "$python_common
with open(sys.argv[3], 'w') as f:
    for i in range(TOTAL):
        f.write('%s\t%s\n' % (key_of(i), value_of(i)))
" "$TOTAL" "$HEADERS" "$WORK/input.tsv"
    # -v -v: kcat reports each delivery on stderr ("% Message delivered to partition P (offset
    # O)"), so every acknowledgement and its offset can be checked.
    local rc=0
    timeout "$(tmo 60)" kcat -P -b "$BOOTSTRAP" -t "$TOPIC" -K '\t' -H "$HDR_SRC" -H "$HDR_FMT" \
        -X acks=all -v -v -l "$WORK/input.tsv" >"$WORK/produce.out" 2>"$WORK/produce.err" || rc=$?
    local detail
    if [[ $rc != 0 ]] || grep -q 'Delivery failed\|ERROR' "$WORK/produce.err"; then
        report produce FAIL "kcat -P $(exit_text $rc): $(grep -m2 'failed\|ERROR' "$WORK/produce.err" | tr '\n' ' ')"
    elif detail=$(pycheck '
import re
offs = {}
for line in open(sys.argv[3], encoding="utf-8"):
    m = re.match(r"% Message delivered to partition (\d+) \(offset (-?\d+)\)", line)
    if m:
        offs.setdefault(int(m.group(1)), []).append(int(m.group(2)))
n = sum(len(o) for o in offs.values())
check(n == TOTAL, "%d delivery reports, expected %d" % (n, TOTAL))
for p, o in offs.items():
    check(sorted(o) == list(range(len(o))), "partition %d: acknowledged offsets are not 0..%d" % (p, len(o) - 1))
print("%d keyed records with 2 constant headers acknowledged (acks=all) at offsets 0..n-1 per partition %s"
      % (n, {p: len(o) for p, o in sorted(offs.items())}))' "$WORK/produce.err"); then
        report produce ok "$detail"
    else
        report produce FAIL "$detail"
    fi
}

# ---- consume ------------------------------------------------------------------------------------
scenario_consume() {
    local rc=0 detail
    timeout "$(tmo 60)" kcat -C -b "$BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f "$FMT" \
        >"$WORK/consume.out" 2>"$WORK/consume.err" || rc=$?
    if [[ $rc != 0 ]]; then
        report consume FAIL "kcat -C -e $(exit_text $rc) after $(wc -l <"$WORK/consume.out") records: $(last_err "$WORK/consume.err")"
        return
    fi
    if detail=$(pycheck '
recs = parse(sys.argv[3], "consume")
keys = check_records(recs, "consume")
counts = check_union(recs)
print("kcat -C -e read all %d records and exited; per partition %s, keys/values/headers match, %d keys each on one partition"
      % (len(recs), counts, len(keys)))' "$WORK/consume.out"); then
        report consume ok "$detail"
    else
        report consume FAIL "$detail"
    fi
}

# ---- consume-group ------------------------------------------------------------------------------
# A balanced consumer (-G) reads from the beginning (no committed offsets yet) and stops after
# exactly FIRST_N records (-c). librdkafka's defaults store an offset only when kcat has received
# the record (enable.auto.offset.store) and commit the stored offsets on close
# (enable.auto.commit), so what is committed is exactly what kcat consumed.
scenario_consume_group() {
    local rc=0 detail
    timeout "$(tmo 60)" kcat -b "$BOOTSTRAP" -G "$GROUP" -X auto.offset.reset=earliest -c "$FIRST_N" -f "$FMT" \
        "$TOPIC" >"$WORK/group1.out" 2>"$WORK/group1.err" || rc=$?
    cat "$WORK/group1.err" >&2
    if [[ $rc != 0 ]]; then
        report consume-group FAIL "kcat -G -c $FIRST_N $(exit_text $rc) after $(wc -l <"$WORK/group1.out") records: $(last_err "$WORK/group1.err")"
        return
    fi
    # The broker's view of the committed offsets (kcat itself cannot show them).
    timeout "$(tmo 20)" "$EDDY" group describe "$GROUP" --json --bootstrap "$BOOTSTRAP" \
        >"$WORK/group1.describe.json" 2>"$WORK/group1.describe.err" || true
    if detail=$(pycheck '
recs = parse(sys.argv[3], "first")
check(len(recs) == int(sys.argv[4]), "consumed %d records, expected %s" % (len(recs), sys.argv[4]))
check_records(recs, "first")
nxt = {}
for r in recs:
    nxt[r["p"]] = r["o"] + 1
try:
    desc = json.load(open(sys.argv[5]))
    committed = {o["partition"]: o["committed_offset"] for o in desc["offsets"] if o["committed_offset"] >= 0}
except Exception as e:
    raise Fail("cannot read committed offsets (eddy group describe): %s" % e)
check(committed == nxt, "committed %s, but consumed up to %s" % (committed, nxt))
json.dump(nxt, open(sys.argv[6], "w"))
print("consumed %d records, committed next offsets %s (= consumed), left the group" % (len(recs), nxt))' \
        "$WORK/group1.out" "$FIRST_N" "$WORK/group1.describe.json" "$WORK/group1.committed.json"); then
        report consume-group ok "$detail"
    else
        report consume-group FAIL "$detail"
    fi
}

# ---- commit-resume ------------------------------------------------------------------------------
# A second balanced consumer in the same group resumes at the committed offsets and reads to the
# end of every partition (-e), then exits.
scenario_commit_resume() {
    local rc=0 detail
    if [[ "${RESULT[consume-group]:-}" != ok ]]; then
        report commit-resume FAIL "consume-group did not pass, nothing to resume from"
        return
    fi
    timeout "$(tmo 60)" kcat -b "$BOOTSTRAP" -G "$GROUP" -X auto.offset.reset=earliest -e -f "$FMT" \
        "$TOPIC" >"$WORK/group2.out" 2>"$WORK/group2.err" || rc=$?
    cat "$WORK/group2.err" >&2
    if [[ $rc != 0 ]]; then
        report commit-resume FAIL "kcat -G -e $(exit_text $rc) after $(wc -l <"$WORK/group2.out") records: $(last_err "$WORK/group2.err")"
        return
    fi
    if detail=$(pycheck '
first = parse(sys.argv[3], "first")
second = parse(sys.argv[4], "second")
committed = {int(p): o for p, o in json.load(open(sys.argv[5])).items()}
k1 = check_records(first, "first")
k2 = check_records(second, "second")
for k in set(k1) & set(k2):
    check(k1[k] == k2[k], "key %s: partition %d in the first consumer, %d in the second" % (k, k1[k], k2[k]))
start = {}
for r in second:
    start.setdefault(r["p"], r["o"])
for p in range(4):
    if p in start:
        check(start[p] == committed.get(p, 0),
              "partition %d: resumed at %d, committed %s" % (p, start[p], committed.get(p)))
counts = check_union(first + second)
for p in range(4):
    if p not in start:  # nothing left to read there: the commit must be the end of the partition
        check(committed.get(p, 0) == counts.get(p, 0),
              "partition %d: got nothing, but committed %s of %d" % (p, committed.get(p), counts.get(p, 0)))
print("resumed at %s = committed; %d more read; union is exactly %d records (per partition %s), "
      "keys/values/headers match" % (start, len(second), TOTAL, counts))' \
        "$WORK/group1.out" "$WORK/group2.out" "$WORK/group1.committed.json"); then
        report commit-resume ok "$detail"
    else
        report commit-resume FAIL "$detail"
    fi
}

for s in "${SCENARIOS[@]}"; do
    log "scenario $s"
    "scenario_${s//-/_}"
done
finish
