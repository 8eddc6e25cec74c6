// Submit a study: the server turns YAML into JSON and validates it, then the study is created.
"use strict";

(() => {
  const form = document.getElementById("submit-form");
  const text = document.getElementById("spec");
  const errors = document.getElementById("errors");
  const ok = document.getElementById("ok");

  function showErrors(messages) {
    errors.replaceChildren(...messages.map((m) => NT.el("li", { text: m })));
    errors.hidden = messages.length === 0;
    if (messages.length) ok.hidden = true;
  }

  async function parse() {
    const body = text.value;
    const type = body.trim().startsWith("{") ? "application/json" : "application/yaml";
    const answer = await NT.api.post("/api/v1/specs/parse", body, type);
    return answer.spec;
  }

  async function run(create) {
    showErrors([]);
    ok.hidden = true;
    try {
      const spec = await parse();
      if (!create) {
        ok.textContent = `The spec is valid: study "${spec.name}", task ${spec.task}.`;
        ok.hidden = false;
        return;
      }
      const study = await NT.api.post("/api/v1/studies", spec);
      ok.replaceChildren("Submitted. ", NT.el("a", { href: `${NT.root}/studies/${encodeURIComponent(study.name)}`, text: `Open ${study.name} →` }));
      ok.hidden = false;
    } catch (err) {
      showErrors(err.messages || [String(err)]);
    }
  }

  document.getElementById("check-btn").onclick = () => run(false);
  form.onsubmit = (e) => {
    e.preventDefault();
    run(true);
  };
})();
