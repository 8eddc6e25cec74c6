// The study page: progress, best trial, plots and the trials table, kept current by polling.
"use strict";

(() => {
  const initial = JSON.parse(document.getElementById("study-data").textContent);
  const name = initial.name;
  const base = `/api/v1/studies/${encodeURIComponent(name)}`;
  const LIVE_PLOTS = ["intermediate", "timeline"];
  const table = { offset: 0, limit: 50, state: "", sortKey: "number", sortDir: 1, rows: [], count: 0 };
  let lastFinished = null;

  // ---- summary ----
  function finishedOf(study) {
    const c = study.counts || {};
    return (c.COMPLETE || 0) + (c.PRUNED || 0) + (c.FAIL || 0);
  }

  function showStudy(study) {
    const status = document.getElementById("status");
    status.className = `badge ${study.status}`;
    status.textContent = study.status;
    document.getElementById("stop-btn").hidden = study.status !== "running";
    document.getElementById("resume-btn").hidden = !["stopped", "failed"].includes(study.status);
    document.getElementById("fail-banner").hidden = study.status !== "failed";
    document.getElementById("fail-reason").textContent = study.fail_reason || "";
    const p = study.progress;
    document.getElementById("finished").textContent = p.finished;
    document.getElementById("n-trials").textContent = study.n_trials;
    const pct = (n) => `${Math.min(100, (100 * n) / Math.max(study.n_trials, 1)).toFixed(1)}%`;
    document.getElementById("bar-done").style.width = pct(p.finished);
    document.getElementById("bar-run").style.width = pct(p.running);
    document.getElementById("warm-start-note").hidden = !p.warm_start;
    document.getElementById("warm-start-count").textContent = p.warm_start || 0;
    const counts = document.getElementById("counts");
    counts.replaceChildren();
    for (const [state, n] of Object.entries(study.counts || {})) {
      counts.append(NT.el("span", { className: `badge ${state}`, text: `${n} ${state}` }), " ");
    }
    const best = document.getElementById("best");
    best.replaceChildren();
    if (!study.best_trial) {
      best.append(NT.el("p", { className: "subtle", text: "No complete trial yet." }));
    } else {
      const b = study.best_trial;
      const link = NT.el("a", { href: `${NT.root}/studies/${encodeURIComponent(name)}/trials/${b.number}`, text: `#${b.number}` });
      const value = NT.el("span", { style: "font-size:16px", text: ` ${study.spec.metric} = ${NT.fmt(b.value)}` });
      best.append(NT.el("div", { className: "stat" }, [link, value]));
      const dl = NT.el("dl", { className: "kv" });
      for (const [k, v] of Object.entries(b.params)) dl.append(NT.el("dt", { text: k }), NT.el("dd", { text: NT.fmt(v) }));
      best.append(dl);
    }
  }

  // ---- plots ----
  async function refreshPlots(kinds) {
    await Promise.all(kinds.map(async (kind) => {
      const box = document.getElementById(`plot-${kind}`);
      if (!box) return;
      try {
        await NT.plot(box, `${base}/plots/${kind}`);
      } catch (err) {
        box.replaceChildren(NT.el("div", { className: "loading", text: `${kind}: ${err.message}` }));
      }
    }));
  }
  // What the importance ranking cannot claim (too few trials, overlapping intervals), from
  // the same cached computation as the plot.
  async function refreshImportanceNotes() {
    const list = document.getElementById("importance-notes");
    if (!list) return;
    try {
      const answer = await NT.api.get(`${base}/importance`);
      list.replaceChildren(...(answer.notes || []).map((note) => NT.el("li", { text: note })));
      list.hidden = !(answer.notes || []).length;
    } catch (err) {
      list.hidden = true;
    }
  }
  const allKinds = () => [...document.querySelectorAll(".plot[data-kind]")].map((e) => e.dataset.kind);

  // ---- trials table ----
  function columns(rows) {
    const params = [...new Set(rows.flatMap((r) => Object.keys(r.params || {})))];
    return [
      { key: "number", label: "#", num: true, get: (r) => r.number, cell: numberCell },
      { key: "state", label: "State", get: (r) => r.state, cell: (r) => NT.badge(r.state) },
      { key: "value", label: "Value", num: true, get: (r) => r.value },
      ...params.map((p) => ({ key: `p:${p}`, label: p, num: true, get: (r) => (r.params || {})[p] })),
      { key: "duration", label: "Duration", num: true, get: (r) => r.duration_s, show: (r) => NT.fmtDuration(r.duration_s) },
      { key: "worker", label: "Worker", get: (r) => r.worker },
      { key: "device", label: "Device", get: (r) => r.device },
      { key: "start", label: "Started", get: (r) => r.datetime_start, show: (r) => NT.fmtTime(r.datetime_start) },
      { key: "reason", label: "Failure", get: (r) => r.fail_reason, className: (r) => (r.fail_reason ? "reason" : "subtle") },
    ];
  }

  // Where a trial came from when not from the sampler: queued by hand, or copied in by a
  // warm start (those rows are set apart: they do not count in the budget).
  function numberCell(r) {
    const cell = NT.el("span", { text: String(r.number) });
    if (r.warm_start) {
      const from = `${r.warm_start.study} #${r.warm_start.number}`;
      cell.append(" ", NT.el("span", { className: "badge origin warm-start", text: "warm start", title: `copied from ${from}` }));
    } else if (r.queued) {
      cell.append(" ", NT.el("span", { className: "badge origin queued", text: "queued", title: "parameters queued by hand" }));
    }
    return cell;
  }

  function compare(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1; // missing values last, either direction
    if (b === null || b === undefined) return -1;
    return a < b ? -1 : 1;
  }

  function renderTable() {
    const cols = columns(table.rows);
    const head = document.querySelector("#trials-table thead tr");
    head.replaceChildren(...cols.map((c) => {
      const th = NT.el("th", { className: `sortable${c.num ? " num" : ""}`, text: c.label });
      if (c.key === table.sortKey) th.classList.add(table.sortDir > 0 ? "sorted-asc" : "sorted-desc");
      th.onclick = () => {
        table.sortDir = table.sortKey === c.key ? -table.sortDir : 1;
        table.sortKey = c.key;
        renderTable();
      };
      return th;
    }));
    const sortCol = cols.find((c) => c.key === table.sortKey) || cols[0];
    const rows = [...table.rows].sort((a, b) => {
      const va = sortCol.get(a), vb = sortCol.get(b);
      if (va === null || va === undefined || vb === null || vb === undefined) return compare(va, vb);
      return table.sortDir * compare(va, vb);
    });
    const body = document.querySelector("#trials-table tbody");
    body.replaceChildren(...rows.map((r) => {
      const tr = NT.el("tr", { className: r.warm_start ? "link warm-start" : "link" });
      tr.onclick = (e) => {
        if (e.target.closest("a")) return;
        location.href = `${NT.root}/studies/${encodeURIComponent(name)}/trials/${r.number}`;
      };
      for (const c of cols) {
        const extra = typeof c.className === "function" ? c.className(r) : c.className || "";
        const td = NT.el("td", { className: [c.num ? "num" : "", extra].join(" ").trim() });
        if (c.cell) td.append(c.cell(r));
        else td.textContent = c.show ? c.show(r) : NT.fmt(c.get(r));
        tr.append(td);
      }
      return tr;
    }));
    document.getElementById("no-trials").hidden = rows.length > 0;
    const last = Math.min(table.offset + table.limit, table.count);
    document.getElementById("trials-count").textContent = `${table.count} ${table.state ? table.state.toLowerCase() : "in all"}`;
    document.getElementById("page-info").textContent = table.count ? `${table.offset + 1}–${last} of ${table.count}` : "";
    document.getElementById("prev-page").disabled = table.offset === 0;
    document.getElementById("next-page").disabled = last >= table.count;
  }

  async function refreshTable() {
    const q = new URLSearchParams({ offset: table.offset, limit: table.limit });
    if (table.state) q.set("state", table.state);
    const page = await NT.api.get(`${base}/trials?${q}`);
    table.rows = page.data;
    table.count = page.count;
    renderTable();
  }

  document.getElementById("state-filter").onchange = (e) => {
    table.state = e.target.value;
    table.offset = 0;
    refreshTable();
  };
  document.getElementById("page-size").onchange = (e) => {
    table.limit = Number(e.target.value);
    table.offset = 0;
    refreshTable();
  };
  document.getElementById("prev-page").onclick = () => {
    table.offset = Math.max(0, table.offset - table.limit);
    refreshTable();
  };
  document.getElementById("next-page").onclick = () => {
    table.offset += table.limit;
    refreshTable();
  };

  // ---- effect of noise: the table beside the effect plot (service.analysis_table's layout) ----
  const pct = (v) => `${Math.round(100 * v)}%`;
  const span = (iv, f) => (iv ? `[${f(iv[0])}, ${f(iv[1])}]` : "—");
  function effectColumns(info) {
    const op = info.success_direction === "minimize" ? "<" : "≥";
    const cols = [
      ["group", (g) => g.label],
      ["trials", (g) => g.trials],
      ["runs", (g) => g.runs],
      ["diverged", (g) => g.diverged],
      [`mean ${info.metric}`, (g) => NT.fmt(g.mean)],
      [`${pct(info.confidence)} interval`, (g) => span(g.interval, NT.fmt)],
      ["median", (g) => NT.fmt(g.median)],
      ["best", (g) => NT.fmt(g.best)],
      ...info.thresholds.map((t, i) => [`${info.success_metric} ${op} ${t}`, (g) => {
        const s = g.success[i];
        return s.rate === null ? "—" : `${s.successes}/${s.runs} ${pct(s.rate)} ${span(s.interval, pct)}`;
      }]),
    ];
    if (info.baseline !== null) {
      cols.push([`vs ${info.baseline}`, (g) => {
        const c = g.comparison;
        if (g.baseline) return "baseline";
        if (!c || c.mean_difference === null) return "—";
        const sign = c.mean_difference > 0 ? "+" : "";
        const p = c.p_value === null ? "" : ` p=${Number(c.p_value.toPrecision(2))}`;
        return `${sign}${NT.fmt(c.mean_difference)} ${span(c.interval, NT.fmt)}${p} (${c.pairs} pair${c.pairs === 1 ? "" : "s"})`;
      }]);
    }
    return cols;
  }

  async function refreshEffect() {
    const table = document.getElementById("effect-table");
    const notes = document.getElementById("effect-notes");
    let info;
    try {
      info = await NT.api.get(`${base}/analysis?by=eta`);
    } catch (err) {
      // A 422: the plot says why (eta is not a parameter, or takes too many values).
      const said = err instanceof NT.ApiError && err.status === 422;
      table.hidden = true;
      notes.replaceChildren(...(said ? [] : [NT.el("li", { text: `analysis: ${err.message}` })]));
      return;
    }
    const cols = effectColumns(info);
    table.hidden = info.groups.length === 0;
    document.getElementById("effect-title").textContent =
      `${info.metric} (${info.direction}) by ${info.by.join(", ")}: ${info.runs} runs`;
    table.querySelector("thead tr").replaceChildren(
      ...cols.map(([label], i) => NT.el("th", { className: i ? "num" : "", text: label })));
    table.querySelector("tbody").replaceChildren(...info.groups.map((g) => NT.el("tr", {},
      cols.map(([, get], i) => NT.el("td", { className: i ? "num" : "", text: String(get(g)) })))));
    notes.replaceChildren(...info.notes.map((n) => NT.el("li", { text: n })));
  }

  // ---- stop / resume ----
  async function setStatus(action) {
    try {
      const study = await NT.api.post(`${base}/${action}`, {});
      showStudy(study);
      NT.toast(action === "stop" ? "Stopped: workers take no new trials; running ones finish." : "Resumed.");
    } catch (err) {
      NT.toast(`Could not ${action}: ${err.message}`);
    }
  }
  document.getElementById("stop-btn").onclick = () => setStatus("stop");
  document.getElementById("resume-btn").onclick = () => setStatus("resume");

  // ---- polling ----
  async function update() {
    const study = await NT.api.get(base);
    showStudy(study);
    const finished = finishedOf(study);
    const tasks = [refreshTable()];
    if (finished !== lastFinished) {
      tasks.push(refreshPlots(allKinds()), refreshEffect(), refreshImportanceNotes());
    } else if (study.progress.running > 0) tasks.push(refreshPlots(LIVE_PLOTS));
    lastFinished = finished;
    await Promise.all(tasks);
  }
  if (initial.study) showStudy(initial.study);
  NT.poll(update);
})();
