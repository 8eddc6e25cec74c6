// The studies list: status, progress and best value of every study, polled.
"use strict";

(() => {
  const pct = (n, total) => `${Math.min(100, (100 * n) / Math.max(total, 1)).toFixed(1)}%`;

  function row(s) {
    const bar = NT.el("div", { className: "progress", style: "width:140px;margin:0" }, [
      NT.el("div", { className: "done", style: `width:${pct(s.progress.finished, s.n_trials)}` }),
      NT.el("div", { className: "run", style: `width:${pct(s.progress.running, s.n_trials)}` }),
    ]);
    const link = NT.el("a", { href: `${NT.root}/studies/${encodeURIComponent(s.name)}`, text: s.name });
    const cells = [
      link,
      s.spec.task,
      NT.badge(s.status),
      bar,
      `${s.progress.finished} / ${s.n_trials}`,
      String(s.progress.running),
      s.best_trial ? NT.fmt(s.best_trial.value) : "—",
      NT.el("span", {}, [`${s.spec.metric} `, NT.el("span", { className: "subtle", text: `(${s.spec.direction})` })]),
      NT.el("span", { className: "subtle", text: NT.fmtTime(s.created_at) }),
    ];
    const numeric = new Set([4, 5, 6]);
    return NT.el("tr", { "data-name": s.name }, cells.map((c, i) => NT.el("td", numeric.has(i) ? { className: "num" } : {}, [c])));
  }

  async function update() {
    const page = await NT.api.get("/api/v1/studies");
    document.querySelector("#studies-table tbody").replaceChildren(...page.data.map(row));
    document.getElementById("no-studies").hidden = page.count > 0;
  }
  NT.poll(update, 5000);
})();
