"""confluent-kafka (librdkafka) against Eddy: admin, produce, consume-group, commit-resume,
transactions. See ../CONTRACT.md."""

import sys

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import compat_common as cc
from compat_common import Deadline, Rec, require

CLIENT = "confluent-kafka"
BOOTSTRAP = cc.bootstrap()
run = cc.Run(CLIENT)
TXN_TOPIC = f"{run.topic}-txn"
TXN_RECORDS = 100  # per transaction


def admin():
    a = AdminClient({"bootstrap.servers": BOOTSTRAP})
    with cc.step("create_topics"):
        futures = a.create_topics([NewTopic(run.topic, num_partitions=cc.PARTITIONS),
                                   NewTopic(TXN_TOPIC, num_partitions=cc.PARTITIONS)], request_timeout=15)
        for name, f in futures.items():
            f.result(timeout=15)
            run.created.add(name)
    with cc.step("list_topics"):
        md = a.list_topics(timeout=10)
    require(run.topic in md.topics, f"{run.topic} not in the topic list {sorted(md.topics)}")
    t = md.topics[run.topic]
    require(t.error is None, f"list_topics: {run.topic} has error {t.error}")
    n_listed = len(t.partitions)
    require(n_listed == cc.PARTITIONS, f"list_topics: {n_listed} partitions")
    with cc.step("describe_topics"):
        desc = a.describe_topics(TopicCollection([run.topic]), request_timeout=10)[run.topic].result(timeout=15)
    n_described = len(desc.partitions)
    require(n_described == cc.PARTITIONS, f"describe_topics: {n_described} partitions")
    return f"created {run.topic}; list_topics and describe_topics: {n_listed} partitions"


def produce():
    run.ensure_topic(run.topic)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    errors = []

    def report(err, msg, i):
        if err is not None:
            errors.append(f"record {i}: {err}")
        else:
            try:
                run.delivered(i, msg.partition(), msg.offset())
            except cc.CheckFailed as e:
                errors.append(str(e))

    dl = Deadline(45, "producing")
    for i in range(cc.N_RECORDS):
        while True:
            try:
                p.produce(run.topic, key=cc.key_of(i), value=cc.value_of(i), headers=cc.headers_of(CLIENT, i),
                          on_delivery=lambda err, msg, i=i: report(err, msg, i))
                break
            except BufferError:
                p.poll(0.1)
                dl.check("local queue full")
        p.poll(0)
    left = p.flush(dl.left())
    require(left == 0, f"{left} records still unacknowledged after {dl.seconds}s")
    require(not errors, f"{len(errors)} delivery errors, first: {errors[0]}" if errors else "")
    return run.check_produced()


def consumer(group, **extra):
    conf = {"bootstrap.servers": BOOTSTRAP, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    conf.update(extra)
    return Consumer(conf)


def to_rec(m):
    return Rec(m.partition(), m.offset(), m.key(), m.value(), m.headers())


def consume_group():
    c = consumer(run.group)
    try:
        c.subscribe([run.topic])
        got = []
        dl = Deadline(45, "reading the first records")
        while len(got) < cc.N_PROCESS:
            dl.check(f"{len(got)} received")
            for m in c.consume(num_messages=500, timeout=1.0):
                if m.error():
                    raise KafkaException(m.error())
                got.append(to_rec(m))
        commit = run.take_processed(got)
        c.commit(offsets=[TopicPartition(run.topic, p, o) for p, o in commit.items()], asynchronous=False)
        back = c.committed([TopicPartition(run.topic, p) for p in range(cc.PARTITIONS)], timeout=10)
        fetched = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in back}
        detail = run.check_committed(commit, fetched)
    finally:
        c.close()
    return detail


def commit_resume():
    c = consumer(run.group)
    try:
        c.subscribe([run.topic])
        last = {}
        dl = Deadline(45, "reading to the end")
        while not run.resume_done(last):
            dl.check(f"{len(run.resumed)} received, last offsets {last}, ends {run.ends}")
            for m in c.consume(num_messages=500, timeout=1.0):
                if m.error():
                    raise KafkaException(m.error())
                r = to_rec(m)
                run.resumed.append(r)
                last[r.partition] = r.offset
    finally:
        c.close()
    return run.check_resume()


def transactions():
    run.ensure_topic(TXN_TOPIC)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"{run.topic}-tx"})
    acked = {"committed": [], "aborted": []}
    errors = []

    def report(err, msg, kind):
        if err is not None:
            errors.append(f"{kind}: {err}")
        else:
            acked[kind].append((msg.partition(), msg.offset(), msg.value()))

    p.init_transactions(15)
    for kind in ("committed", "aborted"):
        p.begin_transaction()
        for i in range(TXN_RECORDS):
            p.produce(TXN_TOPIC, key=cc.key_of(i), value=f"{kind}-{i}".encode(),
                      on_delivery=lambda err, msg, kind=kind: report(err, msg, kind))
        left = p.flush(15)
        require(left == 0, f"{left} {kind} records unacknowledged")
        require(not errors, f"delivery error: {errors[:1]}")
        require(len(acked[kind]) == TXN_RECORDS, f"{len(acked[kind])} {kind} records acknowledged")
        if kind == "committed":
            p.commit_transaction(15)
        else:
            p.abort_transaction(15)

    want = sorted(v for _, _, v in acked["committed"])
    c = consumer(f"{run.topic}-txn-g", **{"isolation.level": "read_committed"})
    got = []
    try:
        c.subscribe([TXN_TOPIC])
        tps = [TopicPartition(TXN_TOPIC, q) for q in range(cc.PARTITIONS)]
        highs = {q: c.get_watermark_offsets(tp, timeout=10)[1] for q, tp in enumerate(tps)}
        # The aborted records are in the log: the high watermarks are past them (and the markers).
        require(sum(highs.values()) >= 2 * TXN_RECORDS + 2, f"high watermarks {highs} do not cover both transactions")
        dl = Deadline(30, "reading the transactional topic")
        while True:
            dl.check(f"{len(got)} received; positions {[tp.offset for tp in c.position(tps)]}, high {highs}")
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error():
                    raise KafkaException(m.error())
                got.append(m.value())
            # Done once the consumer stands at every partition's end (past the abort markers).
            if c.assignment() and all(tp.offset == highs[tp.partition] for tp in c.position(tps)):
                break
    finally:
        c.close()
    got_sorted = sorted(got)
    leaked = [v for v in got if v.startswith(b"aborted")]
    require(not leaked, f"read_committed consumer saw {len(leaked)} aborted records, e.g. {leaked[:2]}")
    require(got_sorted == want, f"read_committed consumer saw {len(got)} records, committed {len(want)}")
    return f"committed {TXN_RECORDS}, aborted {TXN_RECORDS}; read_committed saw exactly the {len(got)} committed"


def main():
    cc.log(f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}")
    m = cc.Matrix(CLIENT, ["admin", "produce", "consume-group", "commit-resume", "transactions"])
    m.run("admin", admin)
    m.run("produce", produce)
    m.run("consume-group", consume_group, "produce")
    m.run("commit-resume", commit_resume, "consume-group")
    m.run("transactions", transactions)
    return m.finish()


if __name__ == "__main__":
    sys.exit(main())
