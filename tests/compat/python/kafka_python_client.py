"""kafka-python against Eddy: admin, produce, consume-group, commit-resume. See ../CONTRACT.md.

api_version is left to the client's auto-detection (ApiVersions)."""

import sys

import kafka

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

import compat_common as cc
from compat_common import Deadline, Rec, require

CLIENT = "kafka-python"
BOOTSTRAP = cc.bootstrap()
run = cc.Run(CLIENT)


def admin():
    with cc.step("KafkaAdminClient"):
        a = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=15000)
    try:
        with cc.step("create_topics"):
            resp = a.create_topics([NewTopic(run.topic, num_partitions=cc.PARTITIONS, replication_factor=1)],
                                   timeout_ms=10000)
        errs = [(t[0], t[1]) for t in resp.topic_errors if t[1] != 0]
        require(not errs, f"CreateTopics v{resp.API_VERSION} errors: {errs}")
        run.created.add(run.topic)
        with cc.step("list_topics"):
            listed = a.list_topics()
        require(run.topic in listed, f"{run.topic} not in list_topics {sorted(listed)}")
        with cc.step("describe_topics"):
            desc = a.describe_topics([run.topic])
        require(len(desc) == 1 and desc[0]["topic"] == run.topic, f"describe_topics answered {desc}")
        require(desc[0]["error_code"] == 0, f"describe_topics: error code {desc[0]['error_code']}")
        n = len(desc[0]["partitions"])
        require(n == cc.PARTITIONS, f"describe_topics: {n} partitions")
    finally:
        a.close()
    return f"created {run.topic} (CreateTopics v{resp.API_VERSION}); listed; described: {n} partitions"


def produce():
    run.ensure_topic(run.topic)
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    cc.log(f"kafka-python {kafka.__version__}: api_version detected as {p.config.get('api_version')}")
    try:
        dl = Deadline(60, "producing")
        futures = [p.send(run.topic, key=cc.key_of(i), value=cc.value_of(i), headers=cc.headers_of(CLIENT, i))
                   for i in range(cc.N_RECORDS)]
        p.flush(timeout=dl.left())
        for i, f in enumerate(futures):
            md = f.get(timeout=max(dl.left(), 0.1))
            run.delivered(i, md.partition, md.offset)
    finally:
        p.close(timeout=10)
    return run.check_produced()


def consumer():
    return KafkaConsumer(run.topic, bootstrap_servers=BOOTSTRAP, group_id=run.group,
                         auto_offset_reset="earliest", enable_auto_commit=False)


def to_rec(m):
    return Rec(m.partition, m.offset, m.key, m.value, m.headers)


def consume_group():
    c = consumer()
    try:
        got = []
        dl = Deadline(45, "reading the first records")
        while len(got) < cc.N_PROCESS:
            dl.check(f"{len(got)} received")
            for recs in c.poll(timeout_ms=1000).values():
                got.extend(to_rec(m) for m in recs)
        commit = run.take_processed(got)
        c.commit({TopicPartition(run.topic, p): OffsetAndMetadata(o, "", -1) for p, o in commit.items()})
        fetched = {p: c.committed(TopicPartition(run.topic, p)) for p in range(cc.PARTITIONS)}
        detail = run.check_committed(commit, fetched)
    finally:
        c.close()
    return detail


def commit_resume():
    c = consumer()
    try:
        last = {}
        dl = Deadline(45, "reading to the end")
        while not run.resume_done(last):
            dl.check(f"{len(run.resumed)} received, last offsets {last}, ends {run.ends}")
            for recs in c.poll(timeout_ms=1000).values():
                for m in recs:
                    r = to_rec(m)
                    run.resumed.append(r)
                    last[r.partition] = r.offset
    finally:
        c.close()
    return run.check_resume()


def main():
    m = cc.Matrix(CLIENT, ["admin", "produce", "consume-group", "commit-resume"])
    m.run("admin", admin)
    m.run("produce", produce)
    m.run("consume-group", consume_group, "produce")
    m.run("commit-resume", commit_resume, "consume-group")
    return m.finish()


if __name__ == "__main__":
    sys.exit(main())
