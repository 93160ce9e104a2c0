/* sweep.js: a sweep's page: its charts, coloured by the axis the picker names, and live
 * progress of its runs (Pages.sweep(id, status)). */
"use strict";

(() => {
  const { getJSON, byId, embed, done, fmt } = Pages;

  const FINAL = ["finished", "cancelled"];
  const FIGURES = ["loss", "plateau", "verdicts", "parallel"];

  function updateRuns(runs) {
    for (const r of runs) {
      const row = document.querySelector(`tr[data-run-id="${r.id}"]`);
      if (!row) continue;
      const cell = (field) => row.querySelector(`[data-field="${field}"]`);
      cell("status").textContent = r.status;
      cell("status").className = `status s-${r.status}`;
      const finished = ["succeeded", "diverged"].includes(r.status);
      cell("steps_to_target").textContent = r.steps_to_target ?? (finished ? "censored" : "—");
      cell("final_loss").textContent = fmt(r.final_loss);
      cell("final_loss").title = r.final_loss == null ? "" : String(r.final_loss);
      cell("test_accuracy").textContent = r.test_accuracy == null ? "—" : r.test_accuracy.toFixed(3);
      cell("verdict").textContent = "";
      if (r.diagnosis) {
        const span = document.createElement("span");
        span.className = `verdict v-${r.diagnosis.verdict}`;
        span.textContent = r.diagnosis.verdict;
        cell("verdict").appendChild(span);
      }
    }
  }

  async function allRuns(id) {
    const runs = [];
    for (;;) { // the API pages by 1,000 at most
      const page = await getJSON(`/api/v1/sweeps/${id}/runs?offset=${runs.length}&limit=1000`);
      runs.push(...page.data);
      if (!page.data.length || runs.length >= page.count) return runs;
    }
  }

  // The charts, coloured by `by` (the server's default axis when empty); the picker offers
  // the axes that vary and keeps the choice in the URL (?by=...), so a link shows the same.
  async function drawFigures(id, by) {
    const query = by ? `?by=${encodeURIComponent(by)}` : "";
    const answer = await getJSON(`/api/v1/sweeps/${id}/figures${query}`);
    const picker = byId("color-by");
    picker.textContent = "";
    const axes = answer.axes.includes(answer.by) ? answer.axes : [answer.by, ...answer.axes];
    for (const axis of axes) {
      const option = new Option(axis, axis, false, axis === answer.by);
      picker.add(option);
    }
    picker.disabled = axes.length < 2;
    document.body.dataset.colorBy = answer.by;
    await Promise.all(FIGURES.map((name) => embed(byId(`plot-${name}`), answer.figures[name])));
  }

  function sweep(id, status, periodMs) {
    const period = periodMs || 2000;
    const chosen = new URLSearchParams(window.location.search).get("by") || "";
    let last = "";
    byId("color-by").addEventListener("change", (event) => {
      const by = event.target.value;
      const url = new URL(window.location.href);
      url.searchParams.set("by", by);
      window.history.replaceState(null, "", url);
      document.body.dataset.plots = "drawing";
      done(drawFigures(id, by));
    });
    async function tick() {
      const s = await getJSON(`/api/v1/sweeps/${id}`);
      const key = JSON.stringify(s.counts);
      if (key !== last) { // the table first, so the status never runs ahead of the rows
        updateRuns(await allRuns(id));
        last = key;
      }
      byId("progress-bar").style.width = `${(100 * s.progress).toFixed(1)}%`;
      const counts = Object.entries(s.counts).sort().map(([k, n]) => `${k} ${n}`).join(", ");
      byId("progress-text").textContent = `${Math.round(100 * s.progress)}% · ${counts}`;
      byId("sweep-status").textContent = s.status;
      byId("sweep-status").className = `status s-${s.status}`;
      document.body.dataset.sweepStatus = s.status;
      if (FINAL.includes(s.status)) await drawFigures(id, byId("color-by").value);
      else setTimeout(() => tick().catch(retry), period);
    }
    function retry() { setTimeout(() => tick().catch(retry), 5 * period); }
    document.body.dataset.sweepStatus = status;
    // A ?by= that names no axis (an old or mistyped link) falls back to the default axis.
    done(drawFigures(id, chosen).catch((err) => (chosen ? drawFigures(id, "") : Promise.reject(err))));
    if (!FINAL.includes(status)) setTimeout(() => tick().catch(retry), period);
  }

  Pages.sweep = sweep;
})();
