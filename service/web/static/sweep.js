/* sweep.js: a sweep's page: live progress of its runs (Pages.sweep(id, status)). */
"use strict";

(() => {
  const { getJSON, byId, embed, done, positive } = Pages;

  const FINAL = ["finished", "cancelled"];

  function updateRuns(runs) {
    for (const r of runs) {
      const row = document.querySelector(`tr[data-run-id="${r.id}"]`);
      if (!row) continue;
      const cell = (field) => row.querySelector(`[data-field="${field}"]`);
      cell("status").textContent = r.status;
      cell("status").className = `status s-${r.status}`;
      const finished = ["succeeded", "diverged"].includes(r.status);
      cell("steps_to_target").textContent = r.steps_to_target ?? (finished ? "censored" : "—");
      cell("final_loss").textContent = r.final_loss == null ? "—" : Plot.fmt(r.final_loss);
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

  function sweep(id, status, periodMs) {
    const period = periodMs || 2000;
    let last = "";
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
      if (!FINAL.includes(s.status)) setTimeout(() => tick().catch(retry), period);
    }
    function retry() { setTimeout(() => tick().catch(retry), 5 * period); }
    document.body.dataset.sweepStatus = status;
    document.body.dataset.plots = "ready";
    if (!FINAL.includes(status)) setTimeout(() => tick().catch(retry), period);
  }

  Pages.sweep = sweep;
})();
