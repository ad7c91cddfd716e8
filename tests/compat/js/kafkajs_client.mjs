// kafkajs scenarios for Eddy's client compatibility matrix (see ../CONTRACT.md).
//
// Prints one `MATRIX<TAB>kafkajs<TAB><scenario><TAB>ok|FAIL<TAB><detail>` line per scenario on
// stdout; everything else (kafkajs logs, progress) goes to stderr. Exits 0 only if every scenario
// passed. Every wait has its own timeout and a watchdog ends the program well before the driver's
// 240 s budget.
import { Kafka, logLevel, Partitioners } from 'kafkajs';

const CLIENT = 'kafkajs';
const SCENARIOS = ['admin', 'produce', 'consume-group', 'commit-resume'];
const BOOTSTRAP = process.env.BOOTSTRAP;
const TOPIC = `compat-${CLIENT}`;
const GROUP = `compat-${CLIENT}-g`;
const PARTITIONS = 4;
const TOTAL = 10000;
const FIRST_N = 6000; // records the first group consumer processes and commits
const WATCHDOG_MS = 225_000;

const t0 = Date.now();
const log = (...a) => console.error(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

// ---- MATRIX reporting -------------------------------------------------------------------------
const reported = new Map();
function report(scenario, ok, detail) {
  if (reported.has(scenario)) return;
  reported.set(scenario, ok);
  const clean = String(detail).replace(/[\t\r\n]+/g, ' ').slice(0, 300);
  process.stdout.write(`MATRIX\t${CLIENT}\t${scenario}\t${ok ? 'ok' : 'FAIL'}\t${clean}\n`);
}
function finish() {
  for (const s of SCENARIOS) if (!reported.has(s)) report(s, false, 'not run (program ended early)');
  const allOk = SCENARIOS.every((s) => reported.get(s) === true);
  log(`done in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  process.exit(allOk ? 0 : 1);
}
const watchdog = setTimeout(() => {
  log('watchdog: out of time');
  for (const s of SCENARIOS) if (!reported.has(s)) report(s, false, `watchdog: no result after ${WATCHDOG_MS / 1000}s`);
  finish();
}, WATCHDOG_MS);
watchdog.unref();

class Fail extends Error {}
function check(cond, msg) {
  if (!cond) throw new Fail(msg);
}
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
// Best-effort cleanup that can never hang the program.
async function quietly(promise, ms = 10_000) {
  try {
    await withTimeout(promise, ms, 'cleanup');
  } catch (e) {
    log('cleanup:', e.message);
  }
}
async function scenario(name, ms, fn) {
  const start = Date.now();
  try {
    const detail = await withTimeout(fn(), ms, name);
    report(name, true, `${detail} (${((Date.now() - start) / 1000).toFixed(1)}s)`);
    return true;
  } catch (e) {
    log(`${name} failed:`, e);
    report(name, false, e instanceof Fail ? e.message : `${e.name}: ${e.message}`);
    return false;
  }
}

// ---- the records ------------------------------------------------------------------------------
const keyOf = (i) => `k${i % 97}`;
const valueOf = (i) => JSON.stringify({ i, pad: 'x'.repeat(80) }); // ~100 bytes
const HEADER_SRC = 'kafkajs-compat';

// kafkajs logs to stdout by default; send its (WARN and above) logs to stderr.
const logCreator = () => ({ namespace, level, label, log: entry }) => {
  const { message, ...extra } = entry;
  console.error(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(extra)}`);
};

const kafka = new Kafka({
  clientId: 'eddy-compat-kafkajs',
  brokers: [BOOTSTRAP],
  logLevel: logLevel.WARN,
  logCreator,
});

// A consumed record, as the checks need it.
function toRecord(partition, m) {
  const headers = {};
  for (const [k, v] of Object.entries(m.headers || {})) {
    headers[k] = Buffer.isBuffer(v) ? v.toString() : Array.isArray(v) ? v.map(String) : String(v);
  }
  return {
    partition,
    offset: Number(m.offset),
    key: m.key === null ? null : m.key.toString(),
    value: m.value === null ? null : m.value.toString(),
    headers,
  };
}

// ---- scenarios --------------------------------------------------------------------------------
async function admin() {
  const a = kafka.admin();
  try {
    await a.connect();
    const created = await a.createTopics({
      topics: [{ topic: TOPIC, numPartitions: PARTITIONS }],
      waitForLeaders: true,
    });
    check(created === true, `createTopics returned ${created} (topic already existed?)`);
    const names = await a.listTopics();
    check(names.includes(TOPIC), `listTopics does not list ${TOPIC}: ${JSON.stringify(names)}`);
    const md = await a.fetchTopicMetadata({ topics: [TOPIC] });
    const t = md.topics.find((x) => x.name === TOPIC);
    check(t, `fetchTopicMetadata has no ${TOPIC}`);
    const ids = t.partitions.map((p) => p.partitionId).sort((x, y) => x - y);
    check(
      JSON.stringify(ids) === JSON.stringify([0, 1, 2, 3]),
      `expected partitions [0,1,2,3], got ${JSON.stringify(ids)}`,
    );
    for (const p of t.partitions) check(p.leader >= 0, `partition ${p.partitionId} has no leader`);
    return `created ${TOPIC}; listTopics and fetchTopicMetadata show ${ids.length} partitions`;
  } finally {
    await quietly(a.disconnect());
  }
}

async function produce() {
  const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  try {
    await p.connect();
    const BATCH = 500;
    let acked = 0;
    for (let start = 0; start < TOTAL; start += BATCH) {
      const messages = [];
      for (let i = start; i < Math.min(start + BATCH, TOTAL); i++) {
        messages.push({ key: keyOf(i), value: valueOf(i), headers: { seq: String(i), src: HEADER_SRC } });
      }
      const res = await p.send({ topic: TOPIC, acks: -1, messages });
      for (const r of res) {
        check(r.errorCode === 0, `produce error code ${r.errorCode} on partition ${r.partition}`);
      }
      acked += messages.length;
    }
    check(acked === TOTAL, `acked ${acked} of ${TOTAL}`);
    return `${TOTAL} keyed records with 2 headers acknowledged (acks=-1)`;
  } finally {
    await quietly(p.disconnect());
  }
}

async function highWatermarks() {
  const a = kafka.admin();
  try {
    await a.connect();
    const offs = await a.fetchTopicOffsets(TOPIC);
    const hw = {};
    for (const o of offs) hw[o.partition] = Number(o.high);
    return hw;
  } finally {
    await quietly(a.disconnect());
  }
}

async function committedOffsets() {
  const a = kafka.admin();
  try {
    await a.connect();
    const res = await a.fetchOffsets({ groupId: GROUP, topics: [TOPIC] });
    const out = {};
    for (const p of res[0].partitions) out[p.partition] = Number(p.offset);
    return out;
  } finally {
    await quietly(a.disconnect());
  }
}

let firstRun = null; // { records, committed: {partition: nextOffset} }

async function consumeGroup() {
  const c = kafka.consumer({ groupId: GROUP });
  const records = [];
  const next = {}; // partition -> offset after the last processed record
  let done;
  const reachedN = new Promise((resolve) => (done = resolve));
  try {
    await c.connect();
    await c.subscribe({ topic: TOPIC, fromBeginning: true });
    await c.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        if (records.length >= FIRST_N) return; // not processed, so neither committed
        records.push(toRecord(partition, message));
        next[partition] = Number(message.offset) + 1;
        if (records.length === 1) log('consume-group: first record');
        if (records.length === FIRST_N) done();
      },
    });
    log('consume-group: consumer running');
    await withTimeout(reachedN, 60_000, `waiting for ${FIRST_N} records (got ${records.length})`);
    log(`consume-group: processed ${FIRST_N}, committing`);
    const toCommit = Object.entries(next).map(([partition, offset]) => ({
      topic: TOPIC,
      partition: Number(partition),
      offset: String(offset),
    }));
    await c.commitOffsets(toCommit);
    log('consume-group: committed, disconnecting');
    await withTimeout(c.disconnect(), 30_000, 'consumer disconnect');
    log('consume-group: disconnected');
    firstRun = { records, committed: next };
    return `processed ${records.length} records, committed ${JSON.stringify(next)}, left the group`;
  } finally {
    await quietly(c.disconnect());
  }
}

async function commitResume() {
  check(firstRun, 'consume-group did not complete, nothing to resume from');
  const hw = await highWatermarks();
  const hwTotal = Object.values(hw).reduce((s, x) => s + x, 0);
  check(hwTotal === TOTAL, `high watermarks ${JSON.stringify(hw)} sum to ${hwTotal}, not ${TOTAL}`);

  // The broker must report exactly what consume-group committed.
  const fetched = await committedOffsets();
  for (let p = 0; p < PARTITIONS; p++) {
    const want = firstRun.committed[p] ?? -1;
    check(fetched[p] === want, `OffsetFetch partition ${p}: broker has ${fetched[p]}, committed ${want}`);
  }

  const remaining = () => Object.keys(hw).some((p) => (pos[p] ?? start(p)) < hw[p]);
  const start = (p) => firstRun.committed[p] ?? 0;
  const pos = {};
  const first = {};
  const records = [];
  let done;
  const caughtUp = new Promise((resolve) => (done = resolve));
  const c = kafka.consumer({ groupId: GROUP });
  try {
    await c.connect();
    await c.subscribe({ topic: TOPIC, fromBeginning: true });
    if (!remaining()) done();
    await c.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const r = toRecord(partition, message);
        records.push(r);
        if (!(partition in first)) first[partition] = r.offset;
        pos[partition] = r.offset + 1;
        if (!remaining()) done();
      },
    });
    log('commit-resume: consumer running');
    await withTimeout(caughtUp, 60_000, `reading to the end (have ${records.length} of ${TOTAL - FIRST_N})`);
    log('commit-resume: read to the end, disconnecting');
    await withTimeout(c.disconnect(), 30_000, 'consumer disconnect');
    log('commit-resume: disconnected');
  } finally {
    await quietly(c.disconnect());
  }

  // Resume point: the first offset of each partition is the committed one.
  for (let p = 0; p < PARTITIONS; p++) {
    if (start(p) < hw[p]) {
      check(first[p] === start(p), `partition ${p}: resumed at ${first[p]}, committed ${start(p)}`);
    } else {
      check(!(p in first), `partition ${p}: committed ${start(p)} = end but got offset ${first[p]}`);
    }
  }
  // Offsets strictly increase within each partition, for each consumer.
  for (const [who, recs] of [['first', firstRun.records], ['second', records]]) {
    const last = {};
    for (const r of recs) {
      check(!(r.partition in last) || r.offset > last[r.partition],
        `${who} consumer: partition ${r.partition} offset ${r.offset} after ${last[r.partition]}`);
      last[r.partition] = r.offset;
    }
  }
  // The union is exactly the 10,000 produced records.
  const all = firstRun.records.concat(records);
  check(all.length === TOTAL, `union has ${all.length} records, expected ${TOTAL}`);
  const seen = new Map(); // i -> record
  const keyPartition = new Map();
  const posSeen = new Set();
  for (const r of all) {
    const pk = `${r.partition}/${r.offset}`;
    check(!posSeen.has(pk), `duplicate partition/offset ${pk}`);
    posSeen.add(pk);
    let i;
    try {
      i = JSON.parse(r.value).i;
    } catch {
      throw new Fail(`undecodable value at ${pk}: ${r.value}`);
    }
    check(Number.isInteger(i) && i >= 0 && i < TOTAL, `bad i at ${pk}: ${i}`);
    check(!seen.has(i), `record ${i} seen twice (${pk} and ${seen.get(i)?.partition}/${seen.get(i)?.offset})`);
    seen.set(i, r);
    check(r.key === keyOf(i), `record ${i}: key ${r.key}, expected ${keyOf(i)}`);
    check(r.value === valueOf(i), `record ${i}: value differs`);
    check(r.headers.seq === String(i) && r.headers.src === HEADER_SRC && Object.keys(r.headers).length === 2,
      `record ${i}: headers ${JSON.stringify(r.headers)}`);
    const kp = keyPartition.get(r.key);
    check(kp === undefined || kp === r.partition, `key ${r.key} in partitions ${kp} and ${r.partition}`);
    keyPartition.set(r.key, r.partition);
  }
  check(seen.size === TOTAL, `${seen.size} distinct records, expected ${TOTAL}`);
  // Within each partition the records appear in production order.
  const byPart = {};
  for (const r of all) (byPart[r.partition] ||= []).push(r);
  for (const [p, recs] of Object.entries(byPart)) {
    recs.sort((x, y) => x.offset - y.offset);
    for (let k = 1; k < recs.length; k++) {
      const a = JSON.parse(recs[k - 1].value).i;
      const b = JSON.parse(recs[k].value).i;
      check(a < b, `partition ${p}: record ${b} at offset ${recs[k].offset} after record ${a}`);
    }
  }
  return `resumed at ${JSON.stringify(first)} = committed; ${records.length} more read; ` +
    `union is exactly ${TOTAL} records, keys/values/headers match, ${keyPartition.size} keys each on one partition`;
}

// ---- main -------------------------------------------------------------------------------------
if (!BOOTSTRAP) {
  for (const s of SCENARIOS) report(s, false, 'BOOTSTRAP is not set');
  finish();
}
log(`kafkajs against ${BOOTSTRAP}, topic ${TOPIC}, group ${GROUP}`);
await scenario('admin', 40_000, admin);
await scenario('produce', 60_000, produce);
await scenario('consume-group', 60_000, consumeGroup);
await scenario('commit-resume', 60_000, commitResume);
finish();
