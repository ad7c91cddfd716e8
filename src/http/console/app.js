// The Eddy console: one page, hash routes, the broker's JSON API polled
// every two seconds. No build step; everything here is served from the binary.
'use strict';

const REFRESH_MS = 2000;
const view = document.getElementById('view');
const title = document.getElementById('title');
const live = document.getElementById('live');
let timer = null;
let renderedRoute = null;

// ---- formatting -----------------------------------------------------------
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function num(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}
function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}
function time(ms) {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(Number(ms));
  return isNaN(d) ? String(ms) : d.toISOString().replace('T', ' ').replace('Z', '');
}
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}
function shown(v) {
  if (v === null || v === undefined) return '<span class="muted">null</span>';
  const compact = typeof v === 'string' ? v : JSON.stringify(v);
  const text = compact.length <= 120 ? compact : JSON.stringify(v, null, 2);
  return `<pre class="val">${esc(text)}</pre>`;
}

// ---- building blocks ------------------------------------------------------
async function get(path) {
  const r = await fetch(path, { cache: 'no-store' });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}
function tiles(items) {
  return '<div class="tiles">' + items.map(([id, label, value]) =>
    `<div class="tile"><div class="label">${esc(label)}</div><div class="value${String(value).length > 12 ? ' small' : ''}" data-testid="tile-${id}">${esc(value)}</div></div>`).join('') + '</div>';
}
function card(heading, body) {
  return `<div class="card"><h2>${esc(heading)}</h2>${body}</div>`;
}
// columns: [label, isNumeric]; rows: arrays of HTML cells
function table(columns, rows, rowAttrs) {
  if (!rows.length) return '<p class="muted">Nothing yet.</p>';
  const head = columns.map(([l, n]) => `<th class="${n ? 'num' : ''}">${esc(l)}</th>`).join('');
  const body = rows.map((r, i) => `<tr ${rowAttrs ? rowAttrs(i) : ''}>` + r.map((c, j) => `<td class="${columns[j][1] ? 'num' : ''}">${c}</td>`).join('') + '</tr>').join('');
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}
function lineChart(points, label) {
  const W = 560, H = 180, L = 56, B = 22;
  if (points.length < 2) return '<p class="muted">Collecting samples…</p>';
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const max = Math.max(...points.map((p) => p.v), 1e-9);
  const x = (t) => L + (W - L - 8) * (t - t0) / Math.max(t1 - t0, 1);
  const y = (v) => 8 + (H - B - 8) * (1 - v / max);
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
  const area = `${path}L${x(t1).toFixed(1)},${H - B}L${x(t0).toFixed(1)},${H - B}Z`;
  return `<svg class="chart" viewBox="0 0 ${W} ${H}">
    <line class="axis" x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}"/>
    <line class="axis" x1="${L}" y1="8" x2="${W}" y2="8"/>
    <text x="${L - 6}" y="12" text-anchor="end">${esc(label(max))}</text>
    <text x="${L - 6}" y="${H - B}" text-anchor="end">0</text>
    <text x="${L}" y="${H - 6}">${Math.round((t1 - t0) / 1000)} s ago</text>
    <text x="${W}" y="${H - 6}" text-anchor="end">now</text>
    <path class="area" d="${area}"/><path class="series" d="${path}"/></svg>`;
}
function barChart(items, label) {
  const W = 560, H = 180, L = 56, B = 22;
  if (!items.length) return '<p class="muted">No windows for this key.</p>';
  const max = Math.max(...items.map((i) => i.v), 1e-9);
  const w = (W - L - 8) / items.length;
  const bars = items.map((it, i) => {
    const h = (H - B - 8) * Math.max(it.v, 0) / max;
    return `<rect class="bar" x="${(L + i * w + w * 0.1).toFixed(1)}" y="${(H - B - h).toFixed(1)}" width="${(w * 0.8).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(it.label)}: ${esc(it.v)}</title></rect>`;
  }).join('');
  return `<svg class="chart" viewBox="0 0 ${W} ${H}">
    <line class="axis" x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}"/>
    <text x="${L - 6}" y="12" text-anchor="end">${esc(label(max))}</text>
    <text x="${L - 6}" y="${H - B}" text-anchor="end">0</text>
    <text x="${L}" y="${H - 6}">${esc(items[0].label)}</text>
    <text x="${W}" y="${H - 6}" text-anchor="end">${esc(items[items.length - 1].label)}</text>${bars}</svg>`;
}
// Per-second rates between consecutive samples of the broker's history.
function rates(samples, key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt > 0) out.push({ t: samples[i].t, v: Math.max(samples[i][key] - samples[i - 1][key], 0) / dt });
  }
  return out;
}

// ---- pages ----------------------------------------------------------------
async function overview() {
  const [o, topics] = await Promise.all([get('/api/overview'), get('/api/topics')]);
  document.getElementById('cluster').innerHTML = `cluster ${esc(o.cluster_id)}<br>node ${esc(o.node_id)} · v${esc(o.version)}`;
  const user = topics.filter((t) => !t.internal).sort((a, b) => b.size_bytes - a.size_bytes);
  return tiles([
    ['topics', 'Topics', num(o.topics)], ['partitions', 'Partitions', num(o.partitions)],
    ['records', 'Records stored', num(o.records)], ['disk', 'Disk used', bytes(o.disk_bytes)],
    ['connections', 'Connections', num(o.connections)], ['groups', 'Consumer groups', num(o.groups)],
    ['processors', 'Processors', num(o.processors)], ['uptime', 'Uptime', duration(o.uptime_s)],
  ]) + '<div class="grid2">' +
    card('Produce throughput', lineChart(rates(o.history, 'bytes_in'), (v) => bytes(v) + '/s')) +
    card('Fetch throughput', lineChart(rates(o.history, 'bytes_out'), (v) => bytes(v) + '/s')) + '</div>' +
    card('Largest topics', table([['Topic'], ['Partitions', 1], ['Records', 1], ['Size', 1]],
      user.slice(0, 10).map((t) => [`<a href="#/topics/${encodeURIComponent(t.name)}">${esc(t.name)}</a>`, num(t.partitions.length), num(t.records), bytes(t.size_bytes)])));
}

async function topicList() {
  const topics = await get('/api/topics');
  return card('Topics', table([['Topic'], ['Partitions', 1], ['Records', 1], ['Size', 1], ['Cleanup policy'], ['']],
    topics.map((t) => [`<a href="#/topics/${encodeURIComponent(t.name)}" data-testid="topic-link">${esc(t.name)}</a>`, num(t.partitions.length),
      num(t.records), bytes(t.size_bytes), esc(t.configs['cleanup.policy'].value), t.internal ? '<span class="pill">internal</span>' : ''])));
}

async function topicPage(name) {
  const [t, recs] = await Promise.all([get('/api/topics/' + encodeURIComponent(name)), get('/api/topics/' + encodeURIComponent(name) + '/records?limit=20')]);
  const configs = Object.entries(t.configs);
  return tiles([['partitions', 'Partitions', num(t.partitions.length)], ['records', 'Records', num(t.records)], ['size', 'Size', bytes(t.size_bytes)],
    ['policy', 'Cleanup policy', t.configs['cleanup.policy'].value]]) +
    card('Partitions', table([['Partition', 1], ['Start offset', 1], ['End offset', 1], ['High watermark', 1], ['Last stable', 1], ['Size', 1]],
      t.partitions.map((p) => [num(p.partition), num(p.log_start_offset), num(p.log_end_offset), num(p.high_watermark), num(p.last_stable_offset), bytes(p.size_bytes)]))) +
    card('Latest records', table([['Partition', 1], ['Offset', 1], ['Time'], ['Key'], ['Value']],
      recs.slice().reverse().slice(0, 50).map((r) => [num(r.partition), num(r.offset), esc(time(r.timestamp)), shown(r.key), shown(r.value)]), () => 'data-testid="record"')) +
    card('Configuration', table([['Config'], ['Value'], ['Source']],
      configs.map(([k, c]) => [esc(k), esc(c.value), `<span class="pill ${c.source === 'default' ? '' : 'ok'}">${esc(c.source)}</span>`]),
      (i) => configs[i][1].source === 'default' ? '' : 'class="nondefault"'));
}

async function groupList() {
  const groups = await get('/api/groups');
  return card('Consumer groups', table([['Group'], ['State'], ['Type'], ['Members', 1], ['Lag', 1]],
    groups.map((g) => [`<a href="#/groups/${encodeURIComponent(g.group_id)}">${esc(g.group_id)}</a>`, state(g.state), esc(g.type), num(g.members.length), num(g.lag)])));
}

function state(s) {
  const cls = { Stable: 'ok', Empty: '', PreparingRebalance: 'warn', CompletingRebalance: 'warn', Dead: 'bad', running: 'ok', restarting: 'bad' }[s];
  return `<span class="pill ${cls === undefined ? '' : cls}">${esc(s)}</span>`;
}

async function groupPage(id) {
  const g = await get('/api/groups/' + encodeURIComponent(id));
  const hist = g.lag_history.map((s) => ({ t: s.t, v: s.lag }));
  return tiles([['state', 'State', g.state], ['members', 'Members', num(g.members.length)], ['lag', 'Total lag', num(g.lag)], ['protocol', 'Assignor', g.protocol || '–']]) +
    card('Lag (records behind the log end)', lineChart(hist, (v) => num(Math.round(v)))) +
    card('Members', table([['Member'], ['Client'], ['Host'], ['Assignment']],
      g.members.map((m) => [esc(m.member_id), esc(m.client_id), esc(m.host), esc(m.assignment.map((a) => `${a.topic}: ${a.partitions.join(', ')}`).join('; '))]))) +
    card('Committed offsets', table([['Topic'], ['Partition', 1], ['Committed', 1], ['Log end', 1], ['Lag', 1]],
      g.offsets.map((o) => [`<a href="#/topics/${encodeURIComponent(o.topic)}">${esc(o.topic)}</a>`, num(o.partition), num(o.committed_offset), num(o.log_end_offset), `<span data-testid="partition-lag">${num(o.lag)}</span>`])));
}

// A span of milliseconds the way the config writes it: 10s, 5m, 1h, 1d.
function span(ms) {
  for (const [unit, n] of [['d', 86400000], ['h', 3600000], ['m', 60000], ['s', 1000]]) if (ms >= n && ms % n === 0) return (ms / n) + unit;
  return ms + 'ms';
}
function windowText(w) {
  const shape = { tumbling: () => `tumbling ${span(w.size_ms)}`, hopping: () => `hopping ${span(w.size_ms)}, advancing ${span(w.advance_ms)}`,
    sliding: () => `sliding, ${span(w.difference_ms)} apart at most`, session: () => `session, closing after ${span(w.gap_ms)} of inactivity` }[w.type];
  return `${shape ? shape() : w.type} · grace ${span(w.grace_ms)} · kept ${span(w.retention_ms)}`;
}

async function processorList() {
  const ps = await get('/api/processors');
  return card('Processors', table([['Processor'], ['Status'], ['Window'], ['Sources'], ['Output'], ['Records in', 1], ['Late', 1], ['Lag', 1], ['Watermark']],
    ps.map((p) => [`<a href="#/processors/${encodeURIComponent(p.name)}">${esc(p.name)}</a>`, state(p.status), esc(p.window.type), esc(p.sources.join(', ')),
      `<a href="#/topics/${encodeURIComponent(p.output)}">${esc(p.output)}</a>`, num(p.records_in), num(p.late), num(p.lag), esc(time(p.watermark))])));
}

async function processorPage(name, key) {
  const p = await get('/api/processors/' + encodeURIComponent(name));
  let windows = '';
  if (key) {
    const q = await get(`/processors/${encodeURIComponent(name)}/windows?key=${encodeURIComponent(key)}`);
    const aggs = p.aggregates.map((a) => a.name);
    const first = aggs.find((a) => q.windows.some((w) => typeof w[a] === 'number')) || aggs[0];
    windows = card(`Windows of ${key} — ${first}`, barChart(q.windows.map((w) => ({ label: time(w.window_start).slice(11, 19), v: Number(w[first]) || 0 })), (v) => num(v))) +
      card('Windows', table([['Start'], ['End'], ...aggs.map((a) => [a, 1]), ['Final']],
        q.windows.map((w) => [esc(time(w.window_start)), esc(time(w.window_end)), ...aggs.map((a) => typeof w[a] === 'object' ? shown(w[a]) : esc(num(w[a]))), w.final ? 'yes' : '']),
        () => 'data-testid="window"')) +
      `<p class="muted">State as of ${esc(time(q.staleness.state_as_of_ms))}; last checkpoint ${esc(time(q.staleness.last_checkpoint_ms))}.</p>`;
  }
  return tiles([['status', 'Status', p.status], ['records-in', 'Records in', num(p.records_in)], ['records-out', 'Records out', num(p.records_out)],
    ['late', 'Late', num(p.late)], ['lag', 'Lag', num(p.lag)], ['watermark', 'Watermark', time(p.watermark)]]) +
    (p.error ? card('Last error', `<p class="pill bad">${esc(p.error)}</p>`) : '') +
    card('Definition', `<div class="kv"><div>Sources</div><div>${esc(p.sources.join(', '))}</div><div>Key</div><div>${esc(p.key.join(', ') || 'record key')}</div>
      <div>Window</div><div>${esc(windowText(p.window))}</div><div>Aggregates</div><div>${esc(p.aggregates.map((a) => `${a.name} = ${a.fn}(${a.field || ''})`).join(', '))}</div>
      <div>Emit</div><div>${esc(p.emit)}</div><div>Guarantee</div><div>${esc(p.guarantee)}</div><div>Output</div><div><a href="#/topics/${encodeURIComponent(p.output)}">${esc(p.output)}</a></div></div>`) +
    card('Look up a key', `<form class="form" id="keyform"><input name="key" placeholder="key, e.g. user-42" value="${esc(key || '')}"><button>Show windows</button></form>`) + windows;
}

// ---- routing --------------------------------------------------------------
function route() {
  const [path, query] = (location.hash.replace(/^#/, '') || '/overview').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  return { parts, params };
}

async function render() {
  const { parts, params } = route();
  const [section, name] = parts;
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === (section || 'overview')));
  const pages = {
    overview: () => ['Overview', overview()],
    topics: () => name ? [`Topic ${name}`, topicPage(name)] : ['Topics', topicList()],
    groups: () => name ? [`Group ${name}`, groupPage(name)] : ['Consumer groups', groupList()],
    processors: () => name ? [`Processor ${name}`, processorPage(name, params.get('key'))] : ['Processors', processorList()],
  };
  const [heading, html] = (pages[section] || pages.overview)();
  const key = location.hash;
  try {
    const body = await html;
    if (location.hash !== key) return; // navigated away meanwhile
    const focused = document.activeElement && document.activeElement.name === 'key' ? document.activeElement.value : null;
    title.textContent = heading;
    view.innerHTML = body;
    live.classList.remove('stale');
    live.textContent = '● live';
    const form = document.getElementById('keyform');
    if (form) {
      if (focused !== null && renderedRoute === key) { form.key.value = focused; form.key.focus(); }
      form.onsubmit = (e) => { e.preventDefault(); location.hash = `#/processors/${encodeURIComponent(name)}?key=${encodeURIComponent(form.key.value)}`; };
    }
    renderedRoute = key;
  } catch (e) {
    live.classList.add('stale');
    live.textContent = '● ' + e.message;
    if (renderedRoute !== key) { title.textContent = heading; view.innerHTML = `<div class="card"><p class="pill bad">${esc(e.message)}</p></div>`; }
  }
}

function schedule() {
  clearTimeout(timer);
  render().finally(() => { timer = setTimeout(schedule, REFRESH_MS); });
}

window.addEventListener('hashchange', schedule);
schedule();
