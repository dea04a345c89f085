// frameflow dashboard: one feed (feed.js) for every tab; actions are POSTs carrying the operator's token.
"use strict";

const state = { config: null, overview: null, history: [], page: "overview" };

// -- small DOM helpers: every value goes in as text, never as HTML -------------------------------
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svgEl(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 10) return seconds.toFixed(1) + "s";
  if (seconds < 60) return Math.round(seconds) + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + String(Math.floor(seconds % 60)).padStart(2, "0") + "s";
  return Math.floor(seconds / 3600) + "h" + String(Math.floor((seconds % 3600) / 60)).padStart(2, "0") + "m";
}

function say(text, isError) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = isError ? "error" : "ok";
}

function canAct() {
  return state.config && !state.config.read_only;
}

// -- actions -----------------------------------------------------------------------------------
async function act(path, question, body) {
  if (!window.confirm(question)) return;
  const token = document.getElementById("token").value;
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Frameflow-Token": token },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  say(answer.message || answer.error, !response.ok);
  if (state.page === "dead-letters") loadDeadLetters();
}

function actionButton(label, path, question, body) {
  const button = el("button", { type: "button", class: "action", "data-action": label }, label);
  button.addEventListener("click", () => act(path, question, body));
  return button;
}

// -- overview ----------------------------------------------------------------------------------
function renderOverview() {
  const overview = state.overview;
  if (!overview) return;
  if (overview.error) {
    say(overview.error, true);
    state.feedError = true;
    return;
  }
  if (state.feedError) {
    say("", false);  // Redis answers again
    state.feedError = false;
  }
  const totals = overview.totals;
  document.getElementById("totals").replaceChildren(
    el("span", {}, `processors: ${totals.live} live, ${totals.stale} stale, ${totals.dead} dead`),
    el("span", { id: "total-fps" }, `frames/s: ${number(totals.frames_per_s)}`),
    el("span", {}, `backlog: ${totals.backlog}`),
    el("span", {}, `dead letters: ${totals.dead_letters}`),
  );
  const processorRows = overview.processors.map((view) => {
    const id = view.processor_id;
    const actions = el("td", { class: "actions-column" });
    if (canAct() && view.alive) {
      const base = `/api/processors/${encodeURIComponent(id)}`;
      actions.append(
        view.draining
          ? actionButton("resume", `${base}/resume`, `Route frames to ${id} again?`)
          : actionButton("drain", `${base}/drain`, `Stop routing frames to ${id}?`),
        actionButton("deregister", `${base}/deregister`, `Remove ${id} from the registry?`),
      );
    }
    if (!view.alive) {
      return el("tr", { "data-processor": id }, el("td", {}, id), el("td", { class: "state" }, "dead"),
        ...Array(10).fill(0).map(() => el("td", {}, "-")), actions);
    }
    return el("tr", { "data-processor": id },
      el("td", {}, id),
      el("td", { class: "state" }, view.state),
      el("td", {}, view.capabilities.join(", ")),
      el("td", {}, view.capacity),
      el("td", {}, view.in_flight),
      el("td", { class: "fps" }, number(view.frames_per_s)),
      el("td", {}, number(view.p50_ms)),
      el("td", {}, number(view.p95_ms)),
      el("td", {}, view.processed),
      el("td", {}, view.failed),
      el("td", {}, age(view.heartbeat_age_s) + " ago"),
      el("td", {}, view.processes),
      actions);
  });
  document.querySelector("#processors tbody").replaceChildren(...processorRows);
  document.querySelector("#queues tbody").replaceChildren(...overview.queues.map((queue) => {
    const drops = Object.entries(queue.drops).map(([reason, count]) => `${reason} ${count}`).join(", ");
    return el("tr", { "data-queue": queue.queue_name },
      el("td", {}, queue.queue_name), el("td", {}, queue.processor_id || "-"),
      el("td", { class: "backlog" }, queue.backlog), el("td", {}, queue.pending), el("td", {}, queue.consumers),
      el("td", {}, age(queue.oldest_age_s)), el("td", {}, queue.delayed), el("td", {}, queue.dead_letters),
      el("td", {}, drops || "0"));
  }));
  document.getElementById("parked-box").hidden = overview.parked.length === 0;
  document.querySelector("#parked tbody").replaceChildren(...overview.parked.map((item) =>
    el("tr", {}, el("td", {}, item.capability), el("td", {}, item.frames), el("td", {}, age(item.oldest_age_s)))));
  document.body.dataset.newestResultMs = overview.newest_result_ms || "";
  renderCharts();
  renderCameras();
}

// -- charts: plain SVG polylines over the poller's history ------------------------------------
const COLOURS = ["#2f7ed8", "#d8572f", "#2fa84f", "#8e44ad", "#c0a020", "#16a0a0"];

function drawChart(svg, series) {
  const width = 600, height = 160, pad = 28;
  const points = series.flatMap((line) => line.points);
  svg.replaceChildren();
  if (points.length === 0) return;
  const t0 = Math.min(...points.map((p) => p[0])), t1 = Math.max(...points.map((p) => p[0]), t0 + 1);
  const top = Math.max(1, ...points.map((p) => p[1])) * 1.1;
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (width - pad - 4);
  const y = (v) => height - pad + 8 - (v / top) * (height - pad);
  svg.append(svgEl("line", { x1: pad, y1: y(0), x2: width - 4, y2: y(0), class: "axis" }));
  const label = svgEl("text", { x: 2, y: 12, class: "axis-label" });
  label.textContent = number(top, 0);
  svg.append(label);
  series.forEach((line, index) => {
    if (line.points.length === 0) return;
    svg.append(svgEl("polyline", {
      points: line.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      stroke: COLOURS[index % COLOURS.length], class: "series", "data-series": line.name,
    }));
  });
}

function renderCharts() {
  drawChart(document.getElementById("chart-fps"),
    [{ name: "all", points: state.history.map((p) => [p.at, p.frames_per_s]) }]);
  const names = [...new Set(state.history.flatMap((p) => Object.keys(p.by_processor)))].sort();
  drawChart(document.getElementById("chart-latency"), names.map((name) => ({
    name,
    points: state.history.filter((p) => p.by_processor[name] && p.by_processor[name].p95_ms !== null)
      .map((p) => [p.at, p.by_processor[name].p95_ms]),
  })));
}

// -- cameras -----------------------------------------------------------------------------------
function renderCameras() {
  if (state.page !== "cameras" || !state.overview) return;
  const states = Object.fromEntries(state.overview.cameras.map((camera) => [camera.camera_id, camera]));
  const pictures = state.overview.pictures || {}, previews = state.overview.previews || {};
  const ids = [...new Set([...Object.keys(states), ...Object.keys(pictures), ...Object.keys(previews)])].sort();
  const cards = ids.map((id) => {
    const camera = states[id], picture = pictures[id], preview = previews[id];
    const card = el("div", { class: "camera", "data-camera": id }, el("h3", {}, id));
    if (preview) {  // the newest frame, no boxes: a new URL (and a fetch) only when the frame changed
      card.append(el("img", { class: "preview", src: preview.url, alt: `newest frame of ${id}`, title: `frame ${preview.frame_id}` }));
    }
    if (picture) {
      const link = el("a", { href: `#frame/${encodeURIComponent(picture.frame_id)}`, title: `frame ${picture.frame_id}` },
        el("img", { class: "picture", src: picture.url, alt: `newest detection of ${id}` }));
      card.append(link, el("p", { class: "detections" },
        picture.detections.map((d) => `${d.label} ${d.score.toFixed(2)}`).join(", ")));
    } else {
      card.append(el("p", { class: "no-picture" }, "no recent detection with a kept image"));
    }
    if (camera) {
      card.append(el("p", { class: "camera-state" }, camera.gone ? "gone" : camera.connected ? "connected" : "reconnecting"),
        el("p", {}, `fps in ${number(camera.fps_in)}, out ${number(camera.fps_out)}, last frame ${age(camera.last_frame_age_s)} ago`));
    }
    return card;
  });
  const current = document.getElementById("cameras");  // pictures come again from the cache (max-age)
  current.replaceChildren(...(cards.length ? cards : [el("p", {}, "no camera yet: no camera process writes its state, no frame was published lately")]));
}

// -- frame lookup ------------------------------------------------------------------------------
async function lookUpFrame(frameId) {
  const box = document.getElementById("frame-result");
  box.replaceChildren(el("p", {}, "looking…"));
  const response = await fetch(`/api/frames/${encodeURIComponent(frameId)}`);
  const found = await response.json();
  if (!response.ok) {
    box.replaceChildren(el("p", { class: "error" }, found.error));
    return;
  }
  const parts = [];
  for (const result of found.results) {
    const rows = Object.entries(result.fields).map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value)));
    parts.push(el("div", { class: "result", "data-processor": result.processor_id },
      el("h3", {}, `processed by ${result.processor_id} → ${result.result_stream}`),
      el("p", {}, `camera ${result.camera_id}; captured ${result.captured_at}; finished ${result.finished_at}; ` +
        `processing ${result.latency_ms} ms`),
      result.trace_url ? el("p", {}, el("a", { href: result.trace_url, target: "_blank", rel: "noopener" }, `trace ${result.trace_id}`))
        : result.trace_id ? el("p", {}, `trace ${result.trace_id}`) : null,
      el("table", {}, el("tbody", {}, ...rows))));
  }
  for (const item of found.queued) parts.push(el("p", { class: "queued" }, `queued on ${item.where} (entry ${item.entry_id})`));
  for (const item of found.dead_letters) parts.push(el("p", { class: "dead" }, `dead letter on ${item.where}: ${item.reason}`));
  if (parts.length === 0) parts.push(el("p", {}, `no trace of ${found.frame_id} in the newest ${found.searched} entries of each stream`));
  box.replaceChildren(...parts);
}

// -- dead letters ------------------------------------------------------------------------------
async function loadDeadLetters() {
  const box = document.getElementById("dead-letters");
  const response = await fetch("/api/dead-letters");
  const listing = await response.json();
  if (!response.ok) {
    box.replaceChildren(el("p", { class: "error" }, listing.error));
    return;
  }
  if (listing.queues.length === 0) {
    box.replaceChildren(el("p", {}, "no dead letters"));
    return;
  }
  box.replaceChildren(...listing.queues.map((queue) => {
    const base = `/api/dead-letters/${encodeURIComponent(queue.queue_name)}`;
    const rows = queue.letters.map((letter) => el("tr", { "data-entry": letter.entry_id },
      el("td", {}, el("details", {}, el("summary", {}, letter.entry_id),
        el("table", { class: "letter-fields" }, el("tbody", {}, ...Object.entries(letter.fields).map(([name, value]) =>
          el("tr", {}, el("th", {}, name), el("td", {}, value))))))), el("td", {}, age(Date.now() / 1000 - letter.dead_at_ms / 1000)),
      el("td", {}, letter.frame_id || letter.message_id || "(malformed entry)"), el("td", {}, letter.reason),
      el("td", { class: "actions-column" }, canAct()
        ? actionButton("requeue", `${base}/requeue`, `Put ${letter.entry_id} back on ${queue.queue_name}?`, { entry_ids: [letter.entry_id] })
        : null)));
    return el("div", { class: "dead-queue", "data-queue": queue.queue_name },
      el("h3", {}, `${queue.queue_name} (${queue.count})`,
        canAct() ? actionButton("purge", `${base}/purge`, `Delete all ${queue.count} dead letter(s) of ${queue.queue_name}?`) : null),
      el("table", {}, el("thead", {}, el("tr", {}, ...["entry", "dead for", "frame / message", "reason", ""].map((name) => el("th", {}, name)))),
        el("tbody", {}, ...rows)));
  }));
}

// -- pages and the live feed -------------------------------------------------------------------
function showPage() {
  state.page = (location.hash || "#overview").slice(1).split("/")[0];
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${state.page}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.page === state.page);
  if (state.page === "cameras") renderCameras();
  if (state.page === "dead-letters") loadDeadLetters();
  const frameId = decodeURIComponent((location.hash.split("/")[1] || ""));
  if (state.page === "frame" && frameId) {
    document.getElementById("frame-id").value = frameId;
    lookUpFrame(frameId);
  }
}

function receive(message) {
  const connection = document.getElementById("connection");
  if (message.kind === "open") {
    connection.textContent = "live";
    connection.className = "connection live";
  } else if (message.kind === "error") {
    connection.textContent = "reconnecting…";
    connection.className = "connection";
  } else if (message.kind === "history") {
    state.history = message.history.slice();
  } else if (message.kind === "overview") {
    state.overview = message.overview;
    if (message.point) {
      state.history.push(message.point);
      while (state.history.length && state.history[0].at < message.point.at - HISTORY_S) state.history.shift();
    }
    renderOverview();
  }
}

// Every tab of this browser shares one connection through a SharedWorker; without one, its own Feed.
function listen() {
  if (window.SharedWorker) {
    const worker = new SharedWorker("/static/feed-worker.js", { name: "frameflow-feed" });
    worker.port.addEventListener("message", (event) => receive(event.data));
    worker.port.start();
    window.addEventListener("pagehide", () => worker.port.postMessage("close"));
  } else {
    const feed = new Feed();
    feed.listen(receive);
  }
}

async function start() {
  state.config = await (await fetch("/api/config")).json();
  const mode = document.getElementById("mode");
  mode.textContent = state.config.read_only
    ? "read-only: start the dashboard with FRAMEFLOW_DASHBOARD_TOKEN to allow actions"
    : `Redis ${state.config.redis}`;
  mode.className = state.config.read_only ? "read-only" : "";
  document.body.classList.toggle("read-only", state.config.read_only);
  document.getElementById("token-box").hidden = state.config.read_only;
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("frameflow-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("frameflow-token", token.value));
  document.getElementById("frame-search").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#frame/${encodeURIComponent(document.getElementById("frame-id").value.trim())}`;
  });
  window.addEventListener("hashchange", showPage);
  showPage();
  listen();
}

start();
