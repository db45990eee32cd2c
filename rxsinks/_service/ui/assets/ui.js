// rxsinks operator page: polls the relay's JSON API and draws it. No framework, no build step.
// Every value from the API is put in the page as text (textContent, Node.append of strings),
// never as HTML: event data (repository names, ids) comes from whoever posted the events.
"use strict";
(() => {
  const body = document.body;
  const view = body.dataset.view;
  const endpointName = body.dataset.endpoint || "";
  const csrf = body.dataset.csrf || "";
  const access = body.dataset.access || "";
  const refresh = Number(body.dataset.refresh) || 2000;
  const DEAD_LETTER_EVERY = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const statusEl = document.getElementById("status");

  // -- small helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  const enc = encodeURIComponent;

  function num(value) {
    return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
  }

  function numCell(value, bad) {
    const cls = "num" + (value ? (bad ? " failish" : "") : " zero");
    return el("td", { class: cls }, num(value));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const ms = seconds * 1000;
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    return seconds.toFixed(2) + " s";
  }

  function clock(t) {
    return t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "";
  }

  function iso(t) {
    return t ? new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "";
  }

  function ago(t) {
    if (!t) return "never";
    const d = Math.max(0, Date.now() / 1000 - t);
    if (d < 60) return Math.round(d) + " s ago";
    if (d < 3600) return Math.round(d / 60) + " min ago";
    if (d < 86400) return (d / 3600).toFixed(1) + " h ago";
    return Math.round(d / 86400) + " d ago";
  }

  function span(seconds) {
    const s = Math.round(seconds);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function statuses(map) {
    const keys = Object.keys(map || {}).sort();
    if (!keys.length) return "–";
    return keys.map((key) => key.split(" ")[0] + "×" + num(map[key])).join(" ");
  }

  const STATE_LABELS = {
    delivering: "delivering",
    breaker_open: "breaker open",
    breaker_half_open: "breaker half-open",
    disabled: "disabled by 410",
    not_held: "not held here",
  };

  function stateBadge(e) {
    return el("span", { class: "state state-" + e.state, title: e.state_text }, STATE_LABELS[e.state] || e.state);
  }

  function setStatus(text, bad) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", Boolean(bad));
  }

  class AuthError extends Error {}

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401) throw new AuthError("logged out");
    if (!response.ok) throw new Error((data && data.error) || "HTTP " + response.status);
    return data;
  }

  async function post(path, payload) {
    return api(path, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
  }

  // -- sparklines ------------------------------------------------------------------------------

  // pending (an area, amber) and delivered (a line, green), each scaled to its own maximum;
  // failed attempts' events as a dashed red line on the delivered scale
  function sparkline(series, width, height, slots) {
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img" });
    const pending = (series && series.pending) || [];
    const delivered = (series && series.delivered) || [];
    const failed = (series && series.failed) || [];
    const n = Math.max(2, slots);
    const step = width / (n - 1);
    const x = (i, len) => width - (len - 1 - i) * step;
    const y = (v, max) => height - 1 - (v / max) * (height - 3);
    root.append(svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "base" }));
    if (pending.length) {
      const values = pending.map((v) => (v === null ? 0 : v));
      const max = Math.max(1, ...values);
      const points = values.map((v, i) => `${x(i, values.length).toFixed(1)},${y(v, max).toFixed(1)}`);
      const first = x(0, values.length).toFixed(1);
      root.append(svg("polygon", { points: `${first},${height} ${points.join(" ")} ${width},${height}`, class: "pending" }));
    }
    const top = Math.max(1, ...delivered, ...failed);
    for (const [values, cls] of [[delivered, "delivered"], [failed, "failed"]]) {
      if (values.length > 1 && values.some((v) => v > 0)) {
        const points = values.map((v, i) => `${x(i, values.length).toFixed(1)},${y(v, top).toFixed(1)}`);
        root.append(svg("polyline", { points: points.join(" "), class: cls }));
      }
    }
    const title = svg("title", {});
    const lastPending = pending.length ? pending[pending.length - 1] : null;
    const total = delivered.reduce((a, b) => a + b, 0);
    title.textContent = `pending now ${num(lastPending)} (max ${num(Math.max(0, ...pending.map((v) => v || 0)))}); ` +
      `${num(total)} delivered in the last ${span(delivered.length * ((series && series.step) || 2))}`;
    root.append(title);
    return root;
  }

  // the whole window once it is full; until then at least 30 s, so that a young relay's
  // few samples still read as a line
  function slotsOf(e) {
    const s = e.series || {};
    const full = Math.round((e.window || 300) / (s.step || 2));
    const have = (s.pending || []).length;
    return Math.min(full, Math.max(have, Math.round(30 / (s.step || 2))));
  }

  // -- the overview ------------------------------------------------------------------------------

  function fact(list, key, label, ...value) {
    list.append(el("div", {}, el("dt", {}, label), el("dd", { "data-fact": key }, ...value)));
  }

  function wideFact(list, key, label, ...value) {
    list.append(el("div", { class: "wide" }, el("dt", {}, label), el("dd", { "data-fact": key }, ...value)));
  }

  function renderIngest(data) {
    const facts = document.getElementById("ingest-facts");
    if (!facts) return;
    const list = document.createDocumentFragment();
    fact(list, "accepted", "accepted events", num(data.accepted_events), " ", el("small", {}, `${data.accepted_rate.toFixed(1)}/s over ${span(data.window)}`));
    const rejected = Object.keys(data.rejected);
    fact(list, "rejected", "rejected requests", rejected.length ? rejected.map((code) => `${code}×${num(data.rejected[code])}`).join(" ") : "none");
    const store = data.store;
    const size = store.kind === "memory"
      ? `${num(store.held_events)} events, ${bytes(store.size_bytes)} of ${bytes(store.max_bytes)}`
      : store.kind === "sqlite" ? bytes(store.size_bytes) : `${num(store.pending)} pending`;
    fact(list, "store", "store", store.kind, " ", el("small", { title: store.where || "" }, size));
    fact(list, "pending", "pending (delivering here)", num(data.pending));
    fact(list, "endpoints", "endpoints", `${num(data.delivering)} of ${num(data.endpoints)} delivering here`);
    fact(list, "connections", "connections", num(data.connections));
    fact(list, "uptime", "uptime", span(data.uptime));
    fact(list, "version", "version", data.version);
    fact(list, "instance", "instance", data.instance);
    fact(list, "access", "access", data.access);
    facts.replaceChildren(list);
    const box = document.getElementById("instances");
    if (!data.redis) { box.replaceChildren(); return; }
    const rows = data.redis.instances.map((item) => el("tr", { "data-instance": item.id },
      el("td", {}, item.id, item.self ? el("small", {}, " (this one)") : null),
      el("td", { class: "num" }, num(item.endpoints.length)),
      el("td", {}, item.endpoints.join(", ") || "–")));
    if (data.redis.free && data.redis.free.length) {
      rows.push(el("tr", {}, el("td", {}, "no holder"), el("td", { class: "num" }, num(data.redis.free.length)), el("td", {}, data.redis.free.join(", "))));
    }
    box.replaceChildren(
      el("h3", {}, "Relay instances (Redis)"),
      data.redis.error ? el("p", { class: "error" }, data.redis.error) : "",
      el("table", { class: "grid", id: "instance-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "instance"), el("th", { class: "num" }, "endpoints"), el("th", {}, "holds"))),
        el("tbody", {}, ...rows)));
  }

  const PROBLEMS = new Set(["breaker_open", "breaker_half_open", "disabled"]);

  function endpointRow(e) {
    const link = el("a", { href: "/ui/endpoints/" + enc(e.name) }, e.name);
    const since = e.since ? el("span", { class: "since", title: iso(e.since) }, "since " + clock(e.since) + " (" + ago(e.since) + ")") : null;
    const held = e.state === "not_held" && e.held_by ? el("span", { class: "since" }, "held by " + e.held_by) : null;
    const failure = e.last_failure
      ? el("td", { class: "when", title: iso(e.last_failure) }, ago(e.last_failure), el("span", { class: "reason", title: e.last_failure_reason || "" }, e.last_failure_reason || ""))
      : el("td", { class: "when zero" }, "never");
    return el("tr", { "data-endpoint": e.name, "data-state": e.state },
      el("td", { class: "name" }, link, el("div", { class: "url", title: e.url }, e.url)),
      el("td", { "data-col": "state" }, stateBadge(e), since, held),
      numCell(e.pending),
      numCell(e.events),
      numCell(e.successes),
      numCell(e.failures, true),
      numCell(e.errors, true),
      numCell(e.dead_letters, true),
      el("td", { class: "statuses" }, statuses(e.statuses)),
      el("td", { class: "when" + (e.last_success ? "" : " zero"), title: iso(e.last_success) }, ago(e.last_success)),
      failure,
      el("td", { class: "num" }, e.rate ? e.rate.toFixed(1) : "0"),
      el("td", { class: "num" }, `${duration(e.p50)} / ${duration(e.p99)}`),
      el("td", { "data-col": "spark" }, sparkline(e.series, 110, 26, slotsOf(e))));
  }

  let lastList = [];

  function renderEndpoints(list) {
    lastList = list;
    const filter = (document.getElementById("filter").value || "").trim().toLowerCase();
    const problemsOnly = document.getElementById("problems").checked;
    const rows = document.createDocumentFragment();
    let shown = 0;
    for (const e of list) {
      if (problemsOnly && !PROBLEMS.has(e.state) && !e.dead_letters && !e.failures && !e.errors) continue;
      const text = `${e.name} ${e.url} ${STATE_LABELS[e.state] || ""}`.toLowerCase();
      if (filter && !text.includes(filter)) continue;
      rows.append(endpointRow(e));
      shown += 1;
    }
    document.querySelector("#endpoints tbody").replaceChildren(rows);
    const problems = list.filter((e) => PROBLEMS.has(e.state)).length;
    document.getElementById("endpoint-count").textContent =
      `${shown === list.length ? list.length : shown + " of " + list.length}` + (problems ? ` · ${problems} with a problem` : "");
  }

  async function pollOverview() {
    const [ingest, endpoints] = await Promise.all([api("/api/ingest"), api("/api/endpoints")]);
    renderIngest(ingest);
    renderEndpoints(endpoints);
  }

  // -- one endpoint --------------------------------------------------------------------------------

  let configShown = "";
  const selected = new Set();
  let deadLetters = [];
  let deadLettersAvailable = false;
  let replayable = false;
  let lastDeadLetterPoll = 0;

  function renderEndpoint(e) {
    document.getElementById("endpoint-state").replaceChildren(stateBadge(e), e.since ? el("small", { class: "since-text" }, " since " + clock(e.since)) : "");
    document.getElementById("endpoint-url").textContent = e.url;
    const facts = document.createDocumentFragment();
    fact(facts, "state", "state", e.state_text);
    fact(facts, "pending", "pending", num(e.pending));
    fact(facts, "events", "events", num(e.events));
    fact(facts, "successes", "delivered (ok)", num(e.successes));
    fact(facts, "failures", "failures", num(e.failures));
    fact(facts, "errors", "errors (no answer)", num(e.errors));
    fact(facts, "dead_letters", "dead-lettered", num(e.dead_letters));
    fact(facts, "dropped", "dropped", num(e.dropped));
    fact(facts, "statuses", "statuses", statuses(e.statuses));
    fact(facts, "last_success", "last success", ago(e.last_success), " ", el("small", {}, clock(e.last_success)));
    fact(facts, "last_failure", "last failure", ago(e.last_failure), " ", el("small", {}, clock(e.last_failure)));
    fact(facts, "rate", "rate", `${(e.rate || 0).toFixed(2)} events/s`, " ", el("small", {}, `over ${span(e.window)}`));
    fact(facts, "latency", "p50 / p99", `${duration(e.p50)} / ${duration(e.p99)}`);
    if (e.held_by) fact(facts, "held_by", "held by", e.held_by);
    if (e.last_failure_reason) wideFact(facts, "last_failure_reason", "last failure's reason", e.last_failure_reason);
    document.getElementById("endpoint-facts").replaceChildren(facts);
    document.getElementById("endpoint-spark").replaceChildren(
      sparkline(e.series, 640, 70, slotsOf(e)),
      el("div", { class: "legend" },
        el("span", {}, el("span", { class: "sw p" }), "pending"),
        el("span", {}, el("span", { class: "sw d" }), "delivered per " + ((e.series && e.series.step) || 2) + " s"),
        el("span", {}, el("span", { class: "sw f" }), "failed")));
    const attempts = e.attempts.map((a) => el("tr", { "data-ok": a.ok ? "1" : "0" },
      el("td", { title: iso(a.time) }, clock(a.time)),
      el("td", { class: "num" }, num(a.events)),
      el("td", { class: a.ok ? "" : "failish" }, a.result),
      el("td", { class: "num" }, duration(a.duration))));
    if (!attempts.length) attempts.push(el("tr", {}, el("td", { colspan: 4, class: "zero" }, "no attempt yet")));
    document.querySelector("#attempts tbody").replaceChildren(...attempts);
    const config = JSON.stringify(e.config, null, 2);
    if (config !== configShown) {
      document.getElementById("config").textContent = config;
      configShown = config;
    }
    deadLettersAvailable = e.dead_letters_available;
    document.getElementById("dead-note").textContent = e.dead_letters_note || "";
  }

  function renderDeadLetters(data) {
    deadLetters = data.dead_letters;
    replayable = data.replayable;
    const known = new Set(deadLetters.map((d) => d.id));
    for (const id of [...selected]) if (!known.has(id)) selected.delete(id);
    const rows = deadLetters.map((d) => {
      const box = el("input", { type: "checkbox", "aria-label": "select " + (d.event_id || "event"), "data-id": d.id, disabled: !replayable });
      box.checked = selected.has(d.id);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(d.id); else selected.delete(d.id);
        updateReplayButtons();
      });
      return el("tr", { "data-dead-letter": d.id === null ? "" : d.id },
        el("td", {}, box),
        el("td", { class: "when", title: iso(d.time) }, d.time ? clock(d.time) : "–"),
        el("td", { class: "mono" }, d.event_id),
        el("td", {}, d.repository + (d.tag ? ":" + d.tag : "")),
        el("td", {}, d.action),
        el("td", { class: "num" }, num(d.attempts)),
        el("td", { class: "reason" }, d.reason));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "zero" }, "no dead letter")));
    document.querySelector("#dead-letters tbody").replaceChildren(...rows);
    document.getElementById("dead-count").textContent = deadLetters.length
      ? `${num(deadLetters.length)}${data.truncated ? "+" : ""}` : "";
    if (data.note) document.getElementById("dead-note").textContent = data.note;
    updateReplayButtons();
  }

  function updateReplayButtons() {
    const selectedButton = document.getElementById("replay-selected");
    selectedButton.disabled = !replayable || selected.size === 0;
    selectedButton.textContent = selected.size ? `Replay selected (${selected.size})` : "Replay selected";
    document.getElementById("replay-all").disabled = !replayable || deadLetters.length === 0;
    const all = document.getElementById("select-all");
    all.disabled = !replayable || deadLetters.length === 0;
    all.checked = deadLetters.length > 0 && selected.size === deadLetters.length;
  }

  async function pollDeadLetters() {
    lastDeadLetterPoll = Date.now();
    if (!deadLettersAvailable) {
      replayable = false;
      updateReplayButtons();
      return;
    }
    renderDeadLetters(await api(`/api/endpoints/${enc(endpointName)}/dead-letters`));
  }

  async function pollEndpoint() {
    renderEndpoint(await api("/api/endpoints/" + enc(endpointName)));
    if (Date.now() - lastDeadLetterPoll >= DEAD_LETTER_EVERY) await pollDeadLetters();
  }

  async function replay(payload) {
    const result = document.getElementById("replay-result");
    result.classList.remove("error");
    result.textContent = "replaying…";
    try {
      const answer = await post(`/api/endpoints/${enc(endpointName)}/replay`, payload);
      result.textContent = `replayed ${num(answer.replayed)} dead letter(s)`;
      selected.clear();
      await pollDeadLetters();
      renderEndpoint(await api("/api/endpoints/" + enc(endpointName)));
    } catch (error) {
      result.classList.add("error");
      result.textContent = "replay failed: " + error.message;
    }
  }

  function wireEndpoint() {
    document.getElementById("replay-all").addEventListener("click", () => replay({ all: true }));
    document.getElementById("replay-selected").addEventListener("click", () => replay({ ids: [...selected] }));
    document.getElementById("select-all").addEventListener("change", (event) => {
      selected.clear();
      if (event.target.checked) for (const d of deadLetters) if (d.id !== null) selected.add(d.id);
      for (const box of document.querySelectorAll("#dead-letters tbody input[type=checkbox]")) {
        box.checked = event.target.checked;
      }
      updateReplayButtons();
    });
  }

  // -- the loop ---------------------------------------------------------------------------------

  let timer = null;

  async function tick() {
    clearTimeout(timer);
    if (!document.hidden) {
      try {
        await (view === "endpoint" ? pollEndpoint() : pollOverview());
        setStatus("updated " + clock(Date.now() / 1000));
      } catch (error) {
        if (error instanceof AuthError) {
          window.location.reload(); // the server shows the login form
          return;
        }
        setStatus("cannot update: " + error.message, true);
      }
    }
    timer = setTimeout(tick, refresh);
  }

  const logout = document.getElementById("logout");
  if (access === "session") {
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      try { await post("/ui/logout", {}); } catch (_) { /* the cookie may be gone already */ }
      window.location.assign("/ui");
    });
  }
  if (view === "overview") {
    const redraw = () => renderEndpoints(lastList);
    document.getElementById("filter").addEventListener("input", redraw);
    document.getElementById("problems").addEventListener("change", redraw);
  } else {
    wireEndpoint();
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  tick();
})();
