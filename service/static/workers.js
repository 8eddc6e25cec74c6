// Live workers: who is training what, and when each last reported.
"use strict";

(() => {
  function ago(iso) {
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    return s < 90 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
  }

  function row(w) {
    const study = w.study
      ? NT.el("a", { href: `${NT.root}/studies/${encodeURIComponent(w.study)}`, text: w.study })
      : NT.el("span", { className: "subtle", text: "idle" });
    const trial = w.study && w.trial_number !== null
      ? NT.el("a", { href: `${NT.root}/studies/${encodeURIComponent(w.study)}/trials/${w.trial_number}`, text: `#${w.trial_number}` })
      : "—";
    const cells = [
      [w.id, "mono"], [w.host, ""], [String(w.pid), "num"], [w.device, ""], [study, ""], [trial, "num"],
      [ago(w.last_heartbeat), ""], [NT.fmtTime(w.started_at), "subtle"],
    ];
    return NT.el("tr", {}, cells.map(([c, cls]) => NT.el("td", cls ? { className: cls } : {}, [c])));
  }

  async function update() {
    const page = await NT.api.get("/api/v1/workers");
    document.querySelector("#workers-table tbody").replaceChildren(...page.data.map(row));
    document.getElementById("no-workers").hidden = page.count > 0;
    document.getElementById("worker-count").textContent = `${page.count} live`;
  }
  NT.poll(update);
})();
