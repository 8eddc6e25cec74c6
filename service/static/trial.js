// One trial: its learning curve and record, polled while the trial is still running.
"use strict";

(() => {
  const initial = JSON.parse(document.getElementById("trial-data").textContent);
  const { name, number } = initial;
  const study = `/api/v1/studies/${encodeURIComponent(name)}`;
  const curve = document.getElementById("curve");
  let last = null;

  function kv(target, entries) {
    const dl = document.getElementById(target);
    dl.replaceChildren();
    for (const [k, v] of entries) dl.append(NT.el("dt", { text: k }), NT.el("dd", {}, [v]));
  }

  function show(t, metric) {
    const state = document.getElementById("state");
    state.className = `badge ${t.state}`;
    state.textContent = t.state;
    const note = t.value === null && t.state === "PRUNED" ? ", pruned before the end" : "";
    const result = [["value", NT.el("span", {}, [NT.el("strong", { text: NT.fmt(t.value) }), " ",
      NT.el("span", { className: "subtle", text: metric + note })])]];
    for (const [k, v] of Object.entries(t.metrics || {})) if (k !== "epoch") result.push([k, NT.fmt(v)]);
    kv("result", result);
    kv("params", Object.entries(t.params || {}).map(([k, v]) => [k, NT.fmt(v)]));
    kv("run", [
      ["worker", t.worker || "—"], ["host", t.host || "—"], ["device", t.device || "—"],
      ["attempt", (t.attempt === null || t.attempt === undefined ? "—" : String(t.attempt)) +
        (t.retry_of === null || t.retry_of === undefined ? "" : ` (retry of #${t.retry_of}` +
          (t.resumed_from_epoch === null ? "" : `, resumed from epoch ${t.resumed_from_epoch}`) + ")")],
      ["started", NT.fmtTime(t.datetime_start)], ["finished", NT.fmtTime(t.datetime_complete)],
      ["duration", NT.fmtDuration(t.duration_s)],
    ]);
    const seconds = (t.curve || []).map((p) => p.epoch_s).filter((s) => typeof s === "number");
    const mean = seconds.reduce((a, b) => a + b, 0) / Math.max(seconds.length, 1);
    document.getElementById("epoch-time").textContent = seconds.length
      ? `${mean.toFixed(2)} s mean over ${seconds.length} epochs, last ${seconds[seconds.length - 1].toFixed(2)} s`
      : "—";
    document.getElementById("failure").hidden = !t.fail_reason;
    document.getElementById("fail-reason").textContent = t.fail_reason || "";
  }

  async function drawCurve() {
    try {
      await NT.plot(curve, `${study}/trials/${number}/plots/curve`);
    } catch (err) {
      curve.replaceChildren(NT.el("div", { className: "loading", text: err.message }));
    }
  }

  async function drawRatio() {
    const fig = await NT.api.get(`${study}/trials/${number}/plots/ratio`);
    const panel = document.getElementById("ratio-panel");
    panel.hidden = !fig.data.length; // no ratio recorded (yet, or by this task)
    if (fig.data.length) await Plotly.react(document.getElementById("ratio"), fig.data, fig.layout, NT.plotConfig);
  }

  async function showLog() {
    const text = await NT.api.text(`${study}/trials/${number}/log`);
    const pre = document.getElementById("trial-log");
    if (pre.textContent !== text) {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = text;
      if (atEnd) pre.scrollTop = pre.scrollHeight; // follow the end, as a terminal would
    }
  }

  async function update() {
    const [t, info] = await Promise.all([NT.api.get(`${study}/trials/${number}`), NT.api.get(study)]);
    await showLog();
    const key = `${t.state}:${Object.keys(t.intermediate_values || {}).length}`;
    if (key !== last) {
      show(t, info.spec.metric);
      await drawCurve();
      await drawRatio();
      last = key;
    }
  }

  const finished = (state) => ["COMPLETE", "PRUNED", "FAIL"].includes(state);
  if (initial.trial) {
    curve.replaceChildren();
    Plotly.react(curve, initial.trial.curve_figure.data, initial.trial.curve_figure.layout, NT.plotConfig);
    const ratio = initial.trial.ratio_figure;
    if (ratio) Plotly.react(document.getElementById("ratio"), ratio.data, ratio.layout, NT.plotConfig);
  }
  // A finished trial never changes again; a running one is polled until it finishes.
  if (!initial.trial || !finished(initial.trial.state)) {
    NT.poll(async () => {
      if (!finished(document.getElementById("state").textContent) || last === null) await update();
    });
  }
})();
