// noisetune dashboard: what every page shares (API calls with an optional token, polling,
// formatting, plots). Plain browser JavaScript; nothing is loaded from another host.
"use strict";

const NT = (() => {
  const root = document.body.dataset.root || "";
  const TOKEN_KEY = "noisetune.token";
  const POLL_MS = 3000;

  class ApiError extends Error {
    constructor(status, messages) {
      super(messages.join("\n"));
      this.status = status;
      this.messages = messages;
    }
  }

  // FastAPI answers {"detail": "..."} or {"detail": [{"loc", "msg"}, ...]}.
  function messagesOf(body, status) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || String(d));
    if (detail) return [String(detail)];
    return [`HTTP ${status}`];
  }

  let tokenPrompt = null;
  // One dialog at a time: every call that met a 401 waits for the same answer.
  function askToken(why) {
    if (tokenPrompt) return tokenPrompt;
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    document.getElementById("token-why").textContent = why;
    input.value = "";
    tokenPrompt = new Promise((resolve) => {
      const done = (value) => {
        dialog.close();
        tokenPrompt = null;
        resolve(value);
      };
      document.getElementById("token-form").onsubmit = (e) => {
        e.preventDefault();
        const token = input.value.trim();
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        done(token || null);
      };
      document.getElementById("token-cancel").onclick = () => done(null);
      dialog.oncancel = () => done(null);
      dialog.showModal();
      input.focus();
    });
    return tokenPrompt;
  }

  async function request(path, options = {}, raw = false) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const headers = Object.assign({}, options.headers || {});
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const response = await fetch(root + path, Object.assign({}, options, { headers }));
      if (response.status === 401) {
        const body = await response.json().catch(() => ({}));
        sessionStorage.removeItem(TOKEN_KEY);
        const why = token ? "That token was not accepted; paste another." : messagesOf(body, 401)[0];
        if (!(await askToken(why))) throw new ApiError(401, messagesOf(body, 401));
        continue;
      }
      if (raw) return response;
      const body = response.status === 204 ? null : await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, messagesOf(body, response.status));
      return body;
    }
    throw new ApiError(401, ["no accepted token"]);
  }

  const api = {
    get: (path) => request(path),
    // A plain-text answer (a trial's log); "" when there is none to read.
    text: (path) => request(path, {}, true).then((r) => (r.ok ? r.text() : "")),
    post: (path, body, type = "application/json") =>
      request(path, {
        method: "POST",
        headers: { "Content-Type": type },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
  };

  function toast(text, ms = 4000) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => el.classList.remove("show"), ms);
  }

  // Calls `fn` now and every POLL_MS while the tab is visible; one call at a time.
  function poll(fn, ms = POLL_MS) {
    let busy = false;
    const live = document.getElementById("live");
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await fn();
        if (live) live.textContent = `updated ${new Date().toLocaleTimeString()}`;
      } catch (err) {
        if (live) live.textContent = "update failed; retrying";
        if (!(err instanceof ApiError && err.status === 401)) console.warn(err);
      } finally {
        busy = false;
      }
    };
    tick();
    setInterval(tick, ms);
    document.addEventListener("visibilitychange", tick);
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return Math.abs(value) >= 1e4 || (Math.abs(value) < 1e-3 && value !== 0)
        ? value.toExponential(3)
        : String(Number(value.toPrecision(4)));
    }
    return String(value);
  }
  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const fmtDuration = (s) =>
    s === null || s === undefined ? "—" : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of [].concat(children)) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const badge = (state) => el("span", { className: `badge ${state}`, text: state });

  const plotConfig = { displaylogo: false, responsive: true };
  const drawn = new Map();
  // Fetches one figure and redraws it only when the server says it changed (ETag).
  async function plot(container, path) {
    const response = await request(path, {}, true);
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new ApiError(response.status, messagesOf(body, response.status));
    }
    const tag = response.headers.get("ETag") || "";
    if (tag && drawn.get(container) === tag) return false;
    const fig = await response.json();
    container.replaceChildren();
    await Plotly.react(container, fig.data, fig.layout, plotConfig);
    drawn.set(container, tag);
    return true;
  }

  // Times rendered on the server are UTC; show them in the browser's time zone.
  for (const t of document.querySelectorAll("time[datetime]")) t.textContent = fmtTime(t.getAttribute("datetime"));

  return { root, api, ApiError, toast, poll, fmt, fmtTime, fmtDuration, el, badge, plot, plotConfig };
})();
