/// `GET /console`: the operator's page, embedded in the binary (no CDN). It renders the snapshots
/// `ConsoleFeedHandler` sends over `/console/live`, through moongate.js. Everything a client or a
/// script controls (session ids, error messages) is set as text, never parsed as HTML.
enum ConsolePage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Moongate console</title>
<link rel="icon" href="data:,">
<style>
  :root {
    --bg: #f5f6fa; --card: #ffffff; --ink: #1d2330; --muted: #6b7385; --line: #e3e6ee;
    --accent: #4f5bd5; --accent-soft: #e8eaff; --ok: #1a9b63; --ok-soft: #e2f6ec;
    --bad: #cf3b3b; --bad-soft: #fde8e8; --warn: #b7791f;
    font-family: ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  }
  @media (prefers-color-scheme: dark) {
    :root { --bg: #11141b; --card: #1a1e28; --ink: #e6e9f2; --muted: #8d94a8; --line: #2a3040;
      --accent: #8b93ff; --accent-soft: #262b4a; --ok: #3ecf8e; --ok-soft: #173327; --bad: #ff6b6b; --bad-soft: #3a1d22; }
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink); font-size: 14px; line-height: 1.45; }
  header { display: flex; align-items: center; gap: 14px; padding: 14px 28px; background: var(--card);
    border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 1; }
  header h1 { font-size: 18px; margin: 0; font-weight: 650; letter-spacing: .2px; }
  header .moon { font-size: 20px; }
  header .spacer { flex: 1; }
  .pill { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px; border-radius: 999px;
    font-size: 12px; font-weight: 600; background: var(--accent-soft); color: var(--accent); }
  .pill.live { background: var(--ok-soft); color: var(--ok); }
  .pill.down { background: var(--bad-soft); color: var(--bad); }
  .dot { width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
  .pill.live .dot { animation: pulse 2s infinite; }
  @keyframes pulse { 50% { opacity: .35; } }
  main { padding: 22px 28px 40px; max-width: 1280px; margin: 0 auto; }
  .cards { display: grid; grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 14px; margin-bottom: 18px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 16px; }
  .card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .6px; }
  .card .value { font-size: 28px; font-weight: 650; margin-top: 4px; font-variant-numeric: tabular-nums; }
  .card.alert .value { color: var(--bad); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 12px; margin-bottom: 18px; overflow: hidden; }
  section h2 { font-size: 13px; margin: 0; padding: 12px 16px; border-bottom: 1px solid var(--line);
    text-transform: uppercase; letter-spacing: .6px; color: var(--muted); display: flex; gap: 8px; align-items: center; }
  section h2 .count { color: var(--ink); }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 9px 16px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { font-size: 12px; color: var(--muted); font-weight: 600; }
  tr:last-child td { border-bottom: 0; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.path, td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
  .kind { font-size: 11px; font-weight: 650; padding: 2px 8px; border-radius: 6px; background: var(--accent-soft); color: var(--accent); }
  .bar { height: 6px; border-radius: 3px; background: var(--accent); opacity: .75; min-width: 2px; }
  .barcell { width: 18%; }
  .empty { color: var(--muted); padding: 14px 16px; }
  .columns { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
  ul.log { list-style: none; margin: 0; padding: 0; }
  ul.log li { padding: 9px 16px; border-bottom: 1px solid var(--line); }
  ul.log li:last-child { border-bottom: 0; }
  ul.log .when { color: var(--muted); font-size: 12px; margin-right: 8px; font-variant-numeric: tabular-nums; }
  ul.log .ok { color: var(--ok); font-weight: 650; }
  ul.log .bad { color: var(--bad); font-weight: 650; }
  ul.log .detail { display: block; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
    font-size: 12px; color: var(--muted); margin-top: 2px; white-space: pre-wrap; word-break: break-word; }
  .legend { margin-left: auto; text-transform: none; letter-spacing: 0; }
  .legend i { display: inline-block; width: 14px; height: 3px; border-radius: 2px; vertical-align: middle; margin: 0 5px 0 12px; }
  svg.spark { width: 100%; height: 56px; display: block; }
  .sparkwrap { padding: 8px 16px 12px; }
  footer { color: var(--muted); font-size: 12px; text-align: center; }
  @media (max-width: 900px) { .cards { grid-template-columns: repeat(2, 1fr); } .columns { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <span class="moon">☾</span><h1>Moongate</h1>
  <span id="status" class="pill"><span class="dot"></span><span id="status-text">connecting</span></span>
  <span class="spacer"></span>
  <span class="pill" title="uptime">up <span id="uptime">–</span></span>
</header>
<main>
  <div class="cards">
    <div class="card"><div class="label">Connections</div><div class="value" id="connections">–</div></div>
    <div class="card"><div class="label">Messages in / s</div><div class="value" id="rate-in">–</div></div>
    <div class="card"><div class="label">Messages out / s</div><div class="value" id="rate-out">–</div></div>
    <div class="card"><div class="label">Sessions</div><div class="value" id="session-count">–</div></div>
    <div class="card" id="error-card"><div class="label">Script errors</div><div class="value" id="error-count">–</div></div>
  </div>

  <section>
    <h2>Messages per second, last two minutes
      <span class="legend"><i style="background: var(--accent)"></i>in<i style="background: var(--ok)"></i>out</span></h2>
    <div class="sparkwrap"><svg class="spark" id="spark" viewBox="0 0 600 56" preserveAspectRatio="none"></svg></div>
  </section>

  <section>
    <h2>Endpoints <span class="count" id="endpoint-count"></span></h2>
    <table id="endpoints">
      <thead><tr><th>Path</th><th>Kind</th><th>Script</th><th class="num">Connections</th>
        <th class="num">In / s</th><th class="num">Out / s</th><th class="barcell"></th></tr></thead>
      <tbody></tbody>
    </table>
  </section>

  <section>
    <h2>Sessions <span class="count" id="sessions-shown"></span></h2>
    <table id="sessions">
      <thead><tr><th>Session</th><th>State</th><th>Epoch</th><th class="num">Seq range</th>
        <th class="num">Buffered</th><th class="num">Bytes</th><th class="num">Watchers</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>

  <div class="columns">
    <section><h2>Recent reloads</h2><ul class="log" id="reloads"></ul></section>
    <section><h2>Recent script errors</h2><ul class="log" id="errors"></ul></section>
  </div>
  <footer>Live over <code>/console/live</code> · metrics at <code>/metrics</code></footer>
</main>
<script src="/moongate.js"></script>
<script>
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const history = [];
  // Rates are averaged over the last five seconds, so a stream with an event every 1.5 s reads
  // as a steady rate instead of flickering between 0 and 1.
  const recent = [];
  const rateWindow = 5;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  const number = (n) => Number(n).toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 1 : 0 });
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s";
  }
  function bytes(n) {
    return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
  }

  function setStatus(kind, text) {
    $("status").className = "pill " + kind;
    $("status-text").textContent = text;
  }

  function rates(snapshot, since) {
    const result = new Map();
    const span = since ? Math.max(0.001, snapshot.at - since.at) : 0;
    for (const e of snapshot.endpoints) {
      const before = since && since.endpoints.find((p) => p.path === e.path);
      result.set(e.path, before && span ? {
        in: Math.max(0, e.messages_in - before.messages_in) / span,
        out: Math.max(0, e.messages_out - before.messages_out) / span,
      } : { in: 0, out: 0 });
    }
    return result;
  }

  function renderEndpoints(snapshot, perEndpoint) {
    const body = $("endpoints").tBodies[0];
    body.replaceChildren();
    const busiest = Math.max(1, ...snapshot.endpoints.map((e) => e.connections));
    for (const e of snapshot.endpoints) {
      const r = perEndpoint.get(e.path);
      const row = el("tr");
      row.dataset.path = e.path;
      row.append(el("td", e.path, "path"));
      const kind = el("td"); kind.append(el("span", e.kind, "kind")); row.append(kind);
      row.append(el("td", e.script || "", "mono"));
      row.append(el("td", number(e.connections), "num conns"));
      row.append(el("td", number(r.in), "num rate-in"));
      row.append(el("td", number(r.out), "num rate-out"));
      const cell = el("td", null, "barcell");
      const bar = el("div", null, "bar");
      bar.style.width = (100 * e.connections / busiest) + "%";
      cell.append(bar); row.append(cell);
      body.append(row);
    }
    $("endpoint-count").textContent = snapshot.endpoints.length;
  }

  function renderSessions(snapshot) {
    const body = $("sessions").tBodies[0];
    body.replaceChildren();
    if (snapshot.sessions.length === 0) {
      const row = el("tr"); const cell = el("td", "No sessions held.", "empty"); cell.colSpan = 7;
      row.append(cell); body.append(row);
    }
    for (const s of snapshot.sessions) {
      const row = el("tr");
      row.dataset.session = s.session;
      row.append(el("td", s.session, "mono"));
      const state = el("td"); state.append(el("span", s.state, "kind")); row.append(state);
      row.append(el("td", s.epoch.slice(0, 8), "mono"));
      row.append(el("td", s.first_seq == null ? "– … " + s.last_seq : s.first_seq + " … " + s.last_seq, "num seq"));
      row.append(el("td", number(s.count), "num"));
      row.append(el("td", bytes(s.bytes), "num"));
      row.append(el("td", number(s.subscribers), "num"));
      body.append(row);
    }
    const more = snapshot.session_count - snapshot.sessions.length;
    $("sessions-shown").textContent = snapshot.session_count + (more > 0 ? " (" + more + " not shown)" : "");
  }

  function renderLog(list, items, render, emptyText) {
    list.replaceChildren();
    if (items.length === 0) list.append(el("li", emptyText, "empty"));
    for (const item of items) list.append(render(item));
  }

  function renderSpark() {
    const svg = $("spark");
    const max = Math.max(1, ...history.map((h) => h.in + h.out));
    const step = 600 / 119;
    const line = (key) => history.map((h, i) =>
      (i ? "L" : "M") + (600 - (history.length - 1 - i) * step).toFixed(1) + " " + (54 - 50 * h[key] / max).toFixed(1)).join(" ");
    svg.replaceChildren();
    for (const [key, color] of [["in", "var(--accent)"], ["out", "var(--ok)"]]) {
      if (history.length < 2) break;
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", line(key));
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", color);
      path.setAttribute("stroke-width", "2");
      path.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(path);
    }
  }

  function totals(perEndpoint) {
    let totalIn = 0, totalOut = 0;
    for (const r of perEndpoint.values()) { totalIn += r.in; totalOut += r.out; }
    return { in: totalIn, out: totalOut };
  }

  function render(snapshot) {
    const previous = recent[recent.length - 1];
    const perEndpoint = rates(snapshot, recent[0]);
    const { in: totalIn, out: totalOut } = totals(perEndpoint);
    if (previous) {
      history.push(totals(rates(snapshot, previous)));
      if (history.length > 120) history.shift();
    }
    $("connections").textContent = number(snapshot.connections);
    $("rate-in").textContent = number(totalIn);
    $("rate-out").textContent = number(totalOut);
    $("session-count").textContent = number(snapshot.session_count);
    $("error-count").textContent = number(snapshot.error_count);
    $("error-card").classList.toggle("alert", snapshot.error_count > 0);
    $("uptime").textContent = duration(snapshot.uptime);
    renderEndpoints(snapshot, perEndpoint);
    renderSessions(snapshot);
    renderLog($("reloads"), snapshot.reloads, (r) => {
      const li = el("li");
      li.append(el("span", clock(r.at), "when"), el("span", r.ok ? "ok" : "failed", r.ok ? "ok" : "bad"), document.createTextNode(" " + r.summary));
      for (const e of r.errors) li.append(el("span", e, "detail"));
      return li;
    }, "No reloads yet.");
    renderLog($("errors"), snapshot.errors, (e) => {
      const li = el("li");
      const where = e.script + (e.line ? ":" + e.line : "");
      li.append(el("span", clock(e.at), "when"), el("span", where, "bad"), document.createTextNode(" " + e.message));
      li.append(el("span", e.kind + " error while " + e.activity + (e.endpoint ? " on " + e.endpoint : ""), "detail"));
      return li;
    }, "No script errors.");
    renderSpark();
    recent.push(snapshot);
    if (recent.length > rateWindow) recent.shift();
  }

  const feed = new Moongate("/console/live", { heartbeatTimeout: 5000 });
  feed.on("open", () => setStatus("live", "live"));
  feed.on("reconnecting", (r) => setStatus("down", "reconnecting (attempt " + r.attempt + ")"));
  feed.on("console", render);
  window.moongateConsole = feed;
})();
</script>
</body>
</html>
"""#
}
