/* compare.js: several runs overlaid (Pages.compare(ids)). */
"use strict";

(() => {
  const { getJSON, byId, embed, done, positive } = Pages;

  function compare(ids) {
    document.querySelectorAll(".swatch").forEach((s) => {
      s.style.background = Plot.COLORS[Number(s.dataset.index) % Plot.COLORS.length];
    });
    return done((async () => {
      const runs = await Promise.all(ids.map((id) => getJSON(`/api/v1/runs/${id}`)));
      const overlay = (key, markers) => runs.map((r, i) => ({
        name: `run ${r.id}`, x: r.curves.step, y: r.curves[key], markers,
        color: Plot.COLORS[i % Plot.COLORS.length], width: 1.3,
      }));
      const all = (key) => runs.flatMap((r) => r.curves[key]);
      Plot.lines(byId("plot-loss"), {
        series: overlay("loss", false), xlabel: "step", ylabel: "training loss",
        logY: positive(all("loss")),
        hlines: runs.length ? [{ y: runs[0].config.target.loss, label: "target" }] : [],
      });
      Plot.lines(byId("plot-eval"), {
        series: overlay("eval_loss", true), xlabel: "step", ylabel: "test loss",
        logY: positive(all("eval_loss")), empty: "no test evaluations recorded",
      });
      Plot.lines(byId("plot-grad"), {
        series: overlay("grad_norm", false), xlabel: "step", ylabel: "gradient norm",
        logY: positive(all("grad_norm")),
      });
    })());
  }

  Pages.compare = compare;
})();
