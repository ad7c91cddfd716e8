"""Shared parts of the Python client programs of the compatibility matrix (see ../CONTRACT.md).

Record generation, the checks every client runs on what it produced and consumed, and the
MATRIX line printing. Each client program (confluent_client.py, kafka_python_client.py,
aiokafka_client.py) does the Kafka calls and hands what it saw to the checks here.
"""

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback

N_RECORDS = 10_000
N_PROCESS = 6_000  # records the first group member processes and commits
PARTITIONS = 4
KEYS = 97
# The driver kills a program at 300 s and the contract wants it done within 240 s: past this,
# every scenario not yet reported is reported FAIL and the process exits.
WATCHDOG_S = 225


def bootstrap():
    b = os.environ.get("BOOTSTRAP")
    if not b:
        sys.exit("BOOTSTRAP is not set (see tests/compat/CONTRACT.md)")
    return b


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Records


def key_of(i):
    return f"k{i % KEYS}".encode()


def value_of(i):
    """~100 bytes of JSON that encode i; the padding depends on i so a mixed-up body shows."""
    head = json.dumps({"i": i, "pad": ""}, separators=(",", ":"))
    pad = hashlib.sha256(str(i).encode()).hexdigest() * 2
    return json.dumps({"i": i, "pad": pad[: 100 - len(head)]}, separators=(",", ":")).encode()


def headers_of(client, i):
    return [("seq", str(i).encode()), ("client", client.encode())]


def index_of(value):
    return json.loads(value)["i"]


class Rec:
    """A consumed record, normalised over the clients."""

    __slots__ = ("partition", "offset", "key", "value", "headers")

    def __init__(self, partition, offset, key, value, headers):
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = [(k, bytes(v) if v is not None else None) for k, v in (headers or [])]

    def __repr__(self):
        return f"p{self.partition}@{self.offset} key={self.key!r}"


class CheckFailed(Exception):
    pass


def require(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def describe(e):
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


@contextlib.contextmanager
def step(name):
    """Names the client call a scenario failed in: `list_topics: ValueError: ...`."""
    try:
        yield
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckFailed(f"{name}: {describe(e)}") from e


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def check(self, progress=""):
        if self.expired():
            raise CheckFailed(f"timed out after {self.seconds:.0f}s {self.what}" + (f" ({progress})" if progress else ""))


# ---------------------------------------------------------------------------------------------
# MATRIX lines


class Matrix:
    def __init__(self, client, scenarios):
        self.client = client
        self.scenarios = list(scenarios)
        self.results = {}
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.watchdog = threading.Timer(WATCHDOG_S, self._watchdog)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _emit(self, scenario, ok, detail):
        with self.lock:
            if scenario in self.results:
                return
            self.results[scenario] = ok
            detail = " ".join(str(detail).split())[:300]
            print(f"MATRIX\t{self.client}\t{scenario}\t{'ok' if ok else 'FAIL'}\t{detail}", flush=True)

    def _watchdog(self):
        for s in self.scenarios:
            self._emit(s, False, f"program watchdog: not finished after {WATCHDOG_S}s")
        sys.stderr.flush()
        os._exit(1)

    def run(self, scenario, fn, *needs):
        """Runs one scenario; `needs` are scenarios that must have passed first."""
        failed = [n for n in needs if not self.results.get(n)]
        if failed:
            self._emit(scenario, False, f"not run: {', '.join(failed)} failed")
            return False
        log(f"--- {self.client} {scenario}")
        t0 = time.monotonic()
        try:
            detail = fn()
            ok = True
        except Exception as e:  # noqa: BLE001 - a scenario that throws is a FAIL with its text
            traceback.print_exc(file=sys.stderr)
            detail = str(e) if isinstance(e, CheckFailed) else describe(e)
            ok = False
        took = time.monotonic() - t0
        self._emit(scenario, ok, f"{detail} ({took:.1f}s)" if detail else f"({took:.1f}s)")
        return ok

    def finish(self):
        self.watchdog.cancel()
        for s in self.scenarios:
            self._emit(s, False, "not reported")
        log(f"{self.client}: done in {time.monotonic() - self.started:.1f}s")
        sys.stdout.flush()
        sys.stderr.flush()
        return 0 if all(self.results.get(s) for s in self.scenarios) else 1


# ---------------------------------------------------------------------------------------------
# What the scenarios share: what was produced, processed and committed


class Run:
    def __init__(self, client):
        self.client = client
        self.topic = f"compat-{client}"
        self.group = f"compat-{client}-g"
        self.produced = {}  # i -> (partition, offset), from the delivery reports
        self.ends = {}  # partition -> end offset after producing
        self.processed = []  # the first consumer's records it processed (N_PROCESS)
        self.committed = {}  # partition -> committed offset (next offset to read)
        self.resumed = []  # the second consumer's records
        self.created = set()  # topics the admin scenario created
        self.via_cli = set()  # topics `eddy topic create` had to create

    def ensure_topic(self, name):
        """The later scenarios need the topic even when `admin` failed after (or before) creating
        it: then it is created with `$EDDY topic create` (the `admin` FAIL still stands)."""
        if name in self.created:
            return
        eddy = os.environ.get("EDDY")
        require(eddy, f"topic {name} was not created by the admin scenario and EDDY is not set")
        out = subprocess.run([eddy, "topic", "create", name, "--partitions", str(PARTITIONS), "--bootstrap", bootstrap()],
                             capture_output=True, text=True, timeout=15)
        if out.returncode != 0 and "exists" not in (out.stdout + out.stderr).lower():
            raise CheckFailed(f"eddy topic create {name}: exit {out.returncode}: {out.stderr.strip()[:200]}")
        log(f"created {name} with eddy topic create (the admin scenario did not): {out.stdout.strip()} {out.stderr.strip()}")
        self.created.add(name)
        self.via_cli.add(name)

    # --- produce

    def delivered(self, i, partition, offset):
        require(i not in self.produced, f"record {i} acknowledged twice")
        require(0 <= partition < PARTITIONS, f"record {i} acknowledged on partition {partition}")
        require(offset is not None and offset >= 0, f"record {i} acknowledged with offset {offset}")
        self.produced[i] = (partition, offset)

    def check_produced(self):
        missing = N_RECORDS - len(self.produced)
        require(missing == 0, f"{missing} of {N_RECORDS} records not acknowledged")
        by_part = {p: [] for p in range(PARTITIONS)}
        key_part = {}
        for i, (p, o) in self.produced.items():
            by_part[p].append(o)
            k = key_of(i)
            require(key_part.setdefault(k, p) == p, f"key {k!r} acknowledged on partitions {key_part[k]} and {p}")
        for p, offs in by_part.items():
            offs.sort()
            # A fresh topic and a plain producer: each partition holds exactly offsets 0..n-1.
            require(offs == list(range(len(offs))), f"partition {p}: acknowledged offsets are not 0..{len(offs) - 1} "
                    f"(first {offs[:3]}, last {offs[-3:]})")
            self.ends[p] = len(offs)
        note = " (topic made by eddy topic create)" if self.topic in self.via_cli else ""
        return f"{N_RECORDS} acked, per partition {[len(by_part[p]) for p in range(PARTITIONS)]}{note}"

    # --- records

    def check_record(self, r, where):
        try:
            i = index_of(r.value)
        except Exception as e:  # noqa: BLE001
            raise CheckFailed(f"{where}: {r!r} value {r.value[:60]!r} is not a produced value ({e})")
        require(0 <= i < N_RECORDS, f"{where}: {r!r} has index {i}")
        require(r.value == value_of(i), f"{where}: {r!r} value differs from record {i}'s")
        require(r.key == key_of(i), f"{where}: {r!r} key {r.key!r}, produced {key_of(i)!r} (record {i})")
        want_h = headers_of(self.client, i)
        require(r.headers == want_h, f"{where}: {r!r} headers {r.headers!r}, produced {want_h!r} (record {i})")
        pos = self.produced.get(i)
        require(pos == (r.partition, r.offset), f"{where}: record {i} read at p{r.partition}@{r.offset}, acknowledged at {pos}")
        return i

    @staticmethod
    def check_increasing(recs, where):
        last = {}
        for r in recs:
            prev = last.get(r.partition)
            require(prev is None or r.offset > prev, f"{where}: partition {r.partition} offset {r.offset} after {prev}")
            last[r.partition] = r.offset

    # --- consume-group

    def take_processed(self, recs):
        """Processes exactly the first N_PROCESS of what the first consumer received."""
        self.processed = list(recs[:N_PROCESS])
        require(len(self.processed) == N_PROCESS, f"only {len(self.processed)} records received")
        self.check_increasing(self.processed, "first consumer")
        first = {}
        for r in self.processed:
            self.check_record(r, "first consumer")
            first.setdefault(r.partition, r.offset)
        for p, o in first.items():
            require(o == 0, f"first consumer (new group, earliest) started partition {p} at {o}, not 0")
        commit = {}
        for r in self.processed:
            commit[r.partition] = r.offset + 1
        return commit

    def check_committed(self, commit, fetched):
        """`fetched`: partition -> offset as the client reads the commit back (None: no commit)."""
        for p in range(PARTITIONS):
            want = commit.get(p)
            got = fetched.get(p)
            require(got == want, f"partition {p}: committed offset read back as {got}, committed {want}")
        self.committed = dict(commit)
        return f"processed {len(self.processed)}, committed {[commit.get(p) for p in range(PARTITIONS)]}"

    # --- commit-resume

    def resume_done(self, recs_last_offsets):
        """Whether the second consumer has reached every partition's end: partition -> last offset seen."""
        for p in range(PARTITIONS):
            start = self.committed.get(p, 0)
            if start >= self.ends[p]:
                continue
            if recs_last_offsets.get(p, -1) + 1 < self.ends[p]:
                return False
        return True

    def check_resume(self):
        recs = self.resumed
        self.check_increasing(recs, "second consumer")
        first = {}
        for r in recs:
            first.setdefault(r.partition, r.offset)
        for p in range(PARTITIONS):
            want = self.committed.get(p, 0)
            if want >= self.ends[p]:
                require(p not in first, f"partition {p}: second consumer read offset {first.get(p)} past the end {self.ends[p]}")
                continue
            require(first.get(p) == want, f"partition {p}: second consumer's first offset {first.get(p)}, committed {want}")
        seen = {}
        key_part = {}
        for where, rs in (("first consumer", self.processed), ("second consumer", recs)):
            for r in rs:
                i = self.check_record(r, where)
                require(i not in seen, f"record {i} read twice: {seen.get(i)} and {where} {r!r}")
                seen[i] = f"{where} {r!r}"
                require(key_part.setdefault(r.key, r.partition) == r.partition,
                        f"key {r.key!r} read from partitions {key_part[r.key]} and {r.partition}")
        missing = [i for i in range(N_RECORDS) if i not in seen]
        require(not missing, f"{len(missing)} records never read (first {missing[:5]})")
        return f"resumed at {[self.committed.get(p, 0) for p in range(PARTITIONS)]}, read {len(recs)}; union = {len(seen)} exact"
