"""aiokafka against Eddy: admin, produce, consume-group, commit-resume. See ../CONTRACT.md.

aiokafka (0.13+) has no api_version setting: it picks each request's version from ApiVersions."""

import asyncio
import sys

import aiokafka

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import compat_common as cc
from compat_common import Deadline, Rec, require

CLIENT = "aiokafka"
BOOTSTRAP = cc.bootstrap()
run = cc.Run(CLIENT)


def scenario(coro_fn, timeout):
    """A scenario as a blocking call, the whole coroutine bounded by `timeout` seconds."""
    async def bounded():
        try:
            return await asyncio.wait_for(coro_fn(), timeout)
        except asyncio.TimeoutError:
            raise cc.CheckFailed(f"timed out after {timeout}s") from None
    return lambda: asyncio.run(bounded())


async def admin():
    a = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    with cc.step("start"):
        await a.start()
    try:
        with cc.step("create_topics"):
            resp = await a.create_topics([NewTopic(run.topic, num_partitions=cc.PARTITIONS, replication_factor=1)])
        errs = [(t[0], t[1]) for t in resp.topic_errors if t[1] != 0]
        require(not errs, f"CreateTopics v{resp.API_VERSION} errors: {errs}")
        run.created.add(run.topic)
        with cc.step("list_topics"):
            listed = await a.list_topics()
        require(run.topic in listed, f"{run.topic} not in list_topics {sorted(listed)}")
        with cc.step("describe_topics"):
            desc = await a.describe_topics([run.topic])
        require(len(desc) == 1 and desc[0]["topic"] == run.topic, f"describe_topics answered {desc}")
        require(desc[0]["error_code"] == 0, f"describe_topics: error code {desc[0]['error_code']}")
        n = len(desc[0]["partitions"])
        require(n == cc.PARTITIONS, f"describe_topics: {n} partitions")
    finally:
        await a.close()
    return f"created {run.topic} (CreateTopics v{resp.API_VERSION}); listed; described: {n} partitions"


async def produce():
    run.ensure_topic(run.topic)
    p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await p.start()
    cc.log(f"aiokafka {aiokafka.__version__} (negotiates each request's version from ApiVersions)")
    try:
        futures = [await p.send(run.topic, key=cc.key_of(i), value=cc.value_of(i), headers=cc.headers_of(CLIENT, i))
                   for i in range(cc.N_RECORDS)]
        for i, md in enumerate(await asyncio.gather(*futures)):
            run.delivered(i, md.partition, md.offset)
    finally:
        await p.stop()
    return run.check_produced()


def consumer():
    return AIOKafkaConsumer(run.topic, bootstrap_servers=BOOTSTRAP, group_id=run.group,
                            auto_offset_reset="earliest", enable_auto_commit=False)


def to_rec(m):
    return Rec(m.partition, m.offset, m.key, m.value, m.headers)


async def consume_group():
    c = consumer()
    await c.start()
    try:
        got = []
        dl = Deadline(45, "reading the first records")
        while len(got) < cc.N_PROCESS:
            dl.check(f"{len(got)} received")
            for recs in (await c.getmany(timeout_ms=1000)).values():
                got.extend(to_rec(m) for m in recs)
        commit = run.take_processed(got)
        await c.commit({TopicPartition(run.topic, p): o for p, o in commit.items()})
        fetched = {p: await c.committed(TopicPartition(run.topic, p)) for p in range(cc.PARTITIONS)}
        detail = run.check_committed(commit, fetched)
    finally:
        await c.stop()
    return detail


async def commit_resume():
    c = consumer()
    await c.start()
    try:
        last = {}
        dl = Deadline(45, "reading to the end")
        while not run.resume_done(last):
            dl.check(f"{len(run.resumed)} received, last offsets {last}, ends {run.ends}")
            for recs in (await c.getmany(timeout_ms=1000)).values():
                for m in recs:
                    r = to_rec(m)
                    run.resumed.append(r)
                    last[r.partition] = r.offset
    finally:
        await c.stop()
    return run.check_resume()


def main():
    m = cc.Matrix(CLIENT, ["admin", "produce", "consume-group", "commit-resume"])
    m.run("admin", scenario(admin, 30))
    m.run("produce", scenario(produce, 60))
    m.run("consume-group", scenario(consume_group, 60), "produce")
    m.run("commit-resume", scenario(commit_resume, 60), "consume-group")
    return m.finish()


if __name__ == "__main__":
    sys.exit(main())
