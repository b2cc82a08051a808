// Live updates of the analysis page, over its WebSocket: /ws/analyses/<id>/?after=<last seq>.
//
// The server sends a snapshot first ({"type": "analysis.snapshot", "data": {...}}, no seq), then
// every event after `after` in order ({"seq": n, "type": ..., "data": ..., "at": ...}), then live
// events and keep-alives. It closes with 1000 after `analysis.finished`, and refuses with
// 4400/4401/4403/4404.
//
// Exactly once: an event is applied only when its seq is the last applied + 1. A smaller seq is a
// duplicate and is ignored; a larger one means something was missed, so the socket is reopened
// with after=<last applied> and the server sends the rest. Any other drop reconnects by itself,
// with backoff, the same way.
//
// Untrusted text (everything a model wrote, file paths, reasons) reaches the page through
// textContent only. A new card is fetched as an HTML fragment rendered and escaped by Django.

const REFUSALS = {
  4400: "live updates refused: bad request",
  4401: "signed out: reload the page to log in again",
  4403: "you may not watch this analysis",
  4404: "this analysis no longer exists",
};
const NORMAL_CLOSURE = 1000;
const CLIENT_CLOSE = 4000; // our own close: a gap, or a silent socket
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const SILENCE_LIMIT_MS = 60000;
const FRAGMENT_ATTEMPTS = 4;
const FRAGMENTS_IN_FLIGHT = 4;
const FINISHED = new Set(["completed", "completed_with_errors", "failed", "cancelled", "timed_out"]);
const PROGRESS_FIELDS = ["total", "done", "analyzed", "cached", "failed", "cards", "requests"];

const statusLabel = (status) => status.replaceAll("_", " ");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One analysis's event stream: connects, reconnects and hands each event over exactly once.
export class EventStream {
  constructor({ url, lastSeq, onSnapshot, onEvent, onState, onStats }) {
    this.url = url;
    this.lastSeq = lastSeq;
    this.onSnapshot = onSnapshot;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onStats = onStats;
    this.attempt = 0;
    this.gapStreak = 0;
    this.finished = false;
    this.stopped = false;
    this.socket = null;
    this.retryTimer = null;
    this.silenceTimer = null;
    this.stats = { connections: 0, applied: 0, duplicates: 0, gaps: 0 };
    window.addEventListener("online", () => this.reconnectSoon(0));
  }

  start() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const socket = new WebSocket(`${this.url}?after=${this.lastSeq}`);
    this.socket = socket;
    this.stats.connections += 1;
    this.onStats(this.lastSeq, this.stats);
    this.onState("connecting");
    socket.addEventListener("message", (message) => this.receive(socket, message));
    socket.addEventListener("close", (event) => this.closed(socket, event));
    this.watchSilence(socket);
  }

  receive(socket, message) {
    if (socket !== this.socket || socket.closedFor) return;
    this.watchSilence(socket);
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "keepalive") return;
    if (event.type === "analysis.snapshot") {
      this.attempt = 0;
      this.onState("live");
      // Finished with nothing left to send (an analysis cancelled before it started has no
      // analysis.finished event): the server's closing 1000 then ends the stream too.
      if (event.data.finished && event.data.last_seq <= this.lastSeq) this.finished = true;
      this.onSnapshot(event.data);
      return;
    }
    if (typeof event.seq !== "number") return;
    if (event.seq <= this.lastSeq) {
      this.stats.duplicates += 1;
    } else if (event.seq > this.lastSeq + 1) {
      this.stats.gaps += 1;
      this.abandon(socket, "gap");
    } else {
      this.apply(event);
    }
    this.onStats(this.lastSeq, this.stats);
  }

  apply(event) {
    try {
      this.onEvent(event);
    } catch (error) {
      console.error("analysis event not shown", event.type, error);
    }
    this.lastSeq = event.seq;
    this.stats.applied += 1;
    this.gapStreak = 0;
    if (event.type === "analysis.finished") this.finished = true;
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    clearTimeout(this.silenceTimer);
    if (this.stopped) return;
    if (socket.closedFor === "gap") {
      this.reconnectSoon(this.gapDelay());
    } else if (event.code === NORMAL_CLOSURE && this.finished) {
      this.stopped = true;
      this.onState("finished");
    } else if (REFUSALS[event.code]) {
      this.stopped = true;
      this.onState("refused", REFUSALS[event.code]);
    } else {
      this.reconnectSoon(this.backoff());
    }
  }

  // Stop listening to a socket and close it; its close event decides what comes next.
  abandon(socket, why) {
    socket.closedFor = why;
    socket.close(CLIENT_CLOSE, why);
  }

  backoff() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  // The first gap is filled at once; a gap that comes back without progress waits longer.
  gapDelay() {
    this.gapStreak += 1;
    if (this.gapStreak === 1) return 0;
    return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.gapStreak);
  }

  reconnectSoon(delay) {
    if (this.stopped || this.socket) return;
    clearTimeout(this.retryTimer);
    this.onState("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  // A socket that says nothing (not even a keep-alive) for too long is presumed dead.
  watchSilence(socket) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.abandon(socket, "silent"), SILENCE_LIMIT_MS);
  }
}

// Fetches HTML fragments a few at a time, retrying each a few times.
class FragmentLoader {
  constructor() {
    this.waiting = [];
    this.running = 0;
  }

  load(url) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ url, resolve, reject });
      this.next();
    });
  }

  async next() {
    if (this.running >= FRAGMENTS_IN_FLIGHT || this.waiting.length === 0) return;
    const job = this.waiting.shift();
    this.running += 1;
    try {
      job.resolve(await fetchFragment(job.url));
    } catch (error) {
      job.reject(error);
    } finally {
      this.running -= 1;
      this.next();
    }
  }
}

async function fetchFragment(url, init = {}) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      const response = await fetch(url, { credentials: "same-origin", ...init });
      if (response.ok) return await response.text();
      if (response.status < 500 || attempt >= FRAGMENT_ATTEMPTS) {
        throw new Error(`HTTP ${response.status}`);
      }
    } catch (error) {
      if (attempt >= FRAGMENT_ATTEMPTS) throw error;
    }
    await sleep(500 * attempt);
  }
}

function parseFragment(html, selector) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content.querySelector(selector);
}

// The page: counters, status, cards, filters and the activity log.
export class AnalysisPage {
  constructor(root) {
    this.root = root;
    this.stateSeq = Number(root.dataset.lastSeq);
    this.cardUrl = root.dataset.cardUrl;
    this.summaryUrl = root.dataset.summaryUrl;
    this.groups = root.querySelector("[data-role=file-groups]");
    this.filters = root.querySelector("[data-role=filters]");
    this.log = root.querySelector("[data-role=activity]");
    this.logLimit = Number(this.log.dataset.limit);
    this.loader = new FragmentLoader();
    this.requestedCards = new Set();
  }

  field(name) {
    return this.root.querySelector(`[data-field="${name}"]`);
  }

  showText(name, text) {
    const element = this.field(name);
    element.textContent = text ?? "";
    element.hidden = !text;
  }

  // The snapshot and progress events carry the counters; an older one never overwrites newer.
  showProgress(data, seq) {
    if (seq < this.stateSeq) return;
    this.stateSeq = seq;
    for (const name of PROGRESS_FIELDS) {
      if (data[name] !== undefined) this.field(name).textContent = String(data[name]);
    }
    const percentage = Number(data.percentage ?? 0);
    this.field("percentage").textContent = percentage.toFixed(1);
    this.root.querySelector("[data-role=progress]").value = percentage;
    this.field("current_unit").textContent = data.current_unit ? `reviewing ${data.current_unit}` : "";
    this.showText("waiting_reason", data.waiting_reason);
  }

  showStatus(status, reason) {
    const pill = this.root.querySelector("[data-role=status]");
    pill.className = `pill status status-${status}`;
    pill.dataset.status = status;
    pill.textContent = statusLabel(status);
    this.root.querySelector("[data-role=progress]").className = `bar status-${status}`;
    const finished = FINISHED.has(status);
    this.root.dataset.finished = String(finished);
    this.root.querySelector("[data-role=cancel]").hidden = finished;
    this.root.querySelector("[data-role=resume]").hidden = !finished || status === "completed";
    if (reason !== undefined) this.showText("status_reason", reason);
    if (finished) this.field("current_unit").textContent = "";
  }

  showConnection(state, detail) {
    const badge = this.root.querySelector("[data-role=connection]");
    const texts = {
      connecting: "connecting…",
      live: "live",
      reconnecting: `reconnecting${detail >= 1000 ? ` in ${Math.round(detail / 1000)} s` : "…"}`,
      finished: "finished",
      refused: detail,
    };
    badge.dataset.state = state;
    badge.textContent = texts[state] ?? state;
  }

  applySnapshot(data) {
    this.showProgress(data, Number(data.last_seq));
    if (Number(data.last_seq) >= this.stateSeq) this.showStatus(data.status, data.status_reason);
  }

  applyEvent(event) {
    const { seq, type, data } = event;
    if (type === "analysis.progress") {
      this.showProgress(data, seq);
      return;
    }
    this.addLogEntry(event);
    if (type === "analysis.started" || type === "analysis.resumed") {
      this.showStatus("running", "");
    } else if (type === "card.created") {
      this.addCard(data);
    } else if (type === "analysis.finished") {
      this.showStatus(data.status, data.reason);
      this.refreshSummary();
    }
  }

  // --- the activity log ---

  describe({ type, data }) {
    switch (type) {
      case "analysis.started":
        return `Started: ${data.functions_total} functions in ${data.files} files (${data.provider})`;
      case "analysis.resumed":
        return `Resumed: ${data.pending} of ${data.functions_total} functions left`;
      case "unit.finished":
        return `${data.status === "cached" ? "From cache" : "Reviewed"}: ${data.qualname} (${data.path})${
          data.cards ? `, ${data.cards} card${data.cards === 1 ? "" : "s"}` : ""
        }`;
      case "unit.failed":
        return `Failed: ${data.qualname} (${data.path}): ${data.reason}`;
      case "card.created":
        return `Card [${data.severity} ${data.kind}] ${data.title} (${data.path}:${data.line_start})`;
      case "analysis.finished":
        return `Finished: ${statusLabel(data.status)}${data.reason ? ` (${data.reason})` : ""}${
          data.health_score == null ? "" : `, score ${data.health_score}`
        }`;
      default:
        return type;
    }
  }

  logEntry(event) {
    const item = document.createElement("li");
    item.dataset.seq = String(event.seq);
    item.dataset.type = event.type;
    item.className = `log-${event.type.replace(".", "-")}`;
    const time = document.createElement("time");
    if (event.at) {
      time.dateTime = event.at;
      time.textContent = new Date(event.at).toLocaleTimeString([], { hour12: false });
    }
    const text = document.createElement("span");
    text.textContent = this.describe(event);
    item.append(time, text);
    return item;
  }

  addLogEntry(event) {
    this.log.prepend(this.logEntry(event));
    while (this.log.children.length > this.logLimit) this.log.lastElementChild.remove();
  }

  showInitialLog(events) {
    this.log.append(...events.slice(0, this.logLimit).map((event) => this.logEntry(event)));
  }

  // --- cards ---

  async addCard(card) {
    if (this.requestedCards.has(card.id) || document.getElementById(`card-${card.id}`)) return;
    this.requestedCards.add(card.id);
    let article;
    try {
      const html = await this.loader.load(this.cardUrl.replace(/\/0\/$/, `/${card.id}/`));
      article = parseFragment(html, "article.finding");
    } catch (error) {
      console.error("card not loaded", card.id, error);
      return;
    }
    if (!article || document.getElementById(article.id)) return;
    const group = this.groupFor(card.path);
    const later = [...group.querySelectorAll("article.finding")].find(
      (other) => Number(other.dataset.line) > card.line_start,
    );
    group.insertBefore(article, later ?? null);
    this.refreshCards();
  }

  groupFor(path) {
    const groups = [...this.groups.querySelectorAll("section.file-group")];
    const existing = groups.find((group) => group.dataset.path === path);
    if (existing) return existing;
    const group = document.createElement("section");
    group.className = "file-group";
    group.dataset.path = path;
    const heading = document.createElement("h3");
    heading.className = "file-path";
    const name = document.createElement("span");
    name.className = "path";
    name.textContent = path;
    const count = document.createElement("span");
    count.className = "count muted";
    count.dataset.role = "group-count";
    heading.append(name, " ", count);
    group.append(heading);
    this.groups.insertBefore(group, groups.find((other) => other.dataset.path > path) ?? null);
    return group;
  }

  refreshCards() {
    const chosen = (name) =>
      new Set([...this.filters.querySelectorAll(`input[name=${name}]:checked`)].map((box) => box.value));
    const severities = chosen("severity");
    const kinds = chosen("kind");
    const counts = new Map();
    const articles = [...this.groups.querySelectorAll("article.finding")];
    for (const article of articles) {
      const { severity, kind } = article.dataset;
      counts.set(`severity:${severity}`, (counts.get(`severity:${severity}`) ?? 0) + 1);
      counts.set(`kind:${kind}`, (counts.get(`kind:${kind}`) ?? 0) + 1);
      article.hidden = !(severities.has(severity) && kinds.has(kind));
    }
    for (const group of this.groups.querySelectorAll("section.file-group")) {
      const cards = group.querySelectorAll("article.finding");
      group.querySelector("[data-role=group-count]").textContent = String(cards.length);
      group.hidden = [...cards].every((article) => article.hidden);
    }
    for (const badge of this.filters.querySelectorAll("[data-count-severity], [data-count-kind]")) {
      const key = badge.dataset.countSeverity
        ? `severity:${badge.dataset.countSeverity}`
        : `kind:${badge.dataset.countKind}`;
      badge.textContent = String(counts.get(key) ?? 0);
    }
    this.root.querySelector("[data-role=no-cards]").hidden = articles.length > 0;
  }

  // Card status buttons answer with the card's new fragment instead of reloading the page.
  async changeCardStatus(form, button) {
    const body = new FormData(form, button);
    const html = await fetchFragment(form.action, {
      method: "POST",
      body,
      headers: { "X-Eidolon-Fragment": "1" },
    });
    const article = parseFragment(html, "article.finding");
    const current = form.closest("article.finding");
    if (article && current) {
      article.hidden = current.hidden;
      current.replaceWith(article);
    }
  }

  async refreshSummary() {
    try {
      const html = await this.loader.load(this.summaryUrl);
      const summary = this.root.querySelector("[data-role=summary]");
      const fresh = document.createElement("template");
      fresh.innerHTML = html;
      summary.replaceChildren(fresh.content);
    } catch (error) {
      console.error("summary not loaded", error);
    }
  }

  listen() {
    this.filters.hidden = false;
    this.filters.addEventListener("change", () => this.refreshCards());
    this.groups.addEventListener("submit", (event) => {
      const form = event.target.closest("form.card-status");
      if (!form || !event.submitter) return;
      event.preventDefault();
      this.changeCardStatus(form, event.submitter).catch(() => {
        form.classList.add("failed");
        form.title = "The status could not be saved: try again.";
      });
    });
  }
}

function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}${path}`;
}

function main() {
  const root = document.getElementById("analysis");
  if (!root) return;
  const page = new AnalysisPage(root);
  page.listen();
  page.showInitialLog(JSON.parse(document.getElementById("activity-data").textContent));
  page.refreshCards();
  if (root.dataset.finished === "true") return;
  const stream = new EventStream({
    url: socketUrl(root.dataset.socketPath),
    lastSeq: Number(root.dataset.lastSeq),
    onSnapshot: (data) => page.applySnapshot(data),
    onEvent: (event) => page.applyEvent(event),
    onState: (state, detail) => page.showConnection(state, detail),
    // What was applied, on the page for people and tests: last seq, connections, applied,
    // duplicates ignored, gaps healed.
    onStats: (lastSeq, stats) => Object.assign(root.dataset, { lastSeq }, stats),
  });
  stream.start();
}

main();
