/* study.js: an Optuna study's page (Pages.study(id)). */
"use strict";

(() => {
  const { getJSON, byId, embed, done, positive } = Pages;

  function study(id) {
    return done((async () => {
      const s = await getJSON(`/api/v1/studies/${id}`);
      byId("study-objective").textContent = `${(s.objective || []).join(", ")} (minimized)`;
      byId("study-state").textContent = s.state;
      const complete = s.trials.filter((t) => t.state === "complete" && t.values);
      const numbers = complete.map((t) => t.number);
      const first = complete.map((t) => t.values[0]);
      let best = Infinity;
      const bestSoFar = first.map((v) => (best = Math.min(best, v)));
      Plot.lines(byId("plot-history"), {
        series: [
          { name: s.objective ? s.objective[0] : "value", x: numbers, y: first, line: false, markers: true },
          { name: "best so far", x: numbers, y: bestSoFar, color: "#d62728" },
        ],
        xlabel: "trial", ylabel: s.objective ? s.objective[0] : "value",
        empty: "no complete trials yet",
      });
      if (s.pareto_front && complete.length && complete[0].values.length >= 2) {
        byId("pareto-figure").hidden = false;
        const front = s.pareto_front.slice().sort((a, b) => a.values[0] - b.values[0]);
        Plot.lines(byId("plot-pareto"), {
          series: [
            { name: "trials", x: complete.map((t) => t.values[0]), y: complete.map((t) => t.values[1]), line: false, markers: true, color: "#999" },
            { name: "Pareto front", x: front.map((t) => t.values[0]), y: front.map((t) => t.values[1]), markers: true, color: "#d62728" },
          ],
          xlabel: s.objective[0], ylabel: s.objective[1],
        });
      }
      const imp = s.importances || {};
      if (imp.unavailable || !Object.keys(imp).length) {
        Plot.empty(byId("plot-importance"), imp.unavailable || "importances need at least 4 complete trials");
      } else {
        Plot.bars(byId("plot-importance"), {
          items: Object.entries(imp).map(([label, value]) => ({ label, value })),
        });
      }
      const body = document.querySelector("#trials tbody");
      body.textContent = "";
      for (const t of s.trials) {
        const tr = document.createElement("tr");
        const values = t.values ? t.values.map((v) => Plot.fmt(v)).join(", ") : "—";
        const params = Object.entries(t.params || {}).map(([k, v]) => `${k}=${typeof v === "number" ? Plot.fmt(v) : v}`).join(" ");
        for (const text of [t.number, t.state, values, params]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        }
        const td = document.createElement("td");
        if (t.run_id != null) {
          const a = document.createElement("a");
          a.href = `/runs/${t.run_id}`;
          a.textContent = t.run_id;
          td.appendChild(a);
        }
        tr.appendChild(td);
        body.appendChild(tr);
      }
    })());
  }

  Pages.study = study;
})();
