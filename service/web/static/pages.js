/* pages.js: what every page shares (fetching JSON, drawing a figure spec with vega-embed,
 * reporting when the page is drawn). Each page's own script (run.js, sweep.js, compare.js,
 * study.js) adds its entry point: Pages.run(id), Pages.sweep(id, status), Pages.compare(ids),
 * Pages.study(id).
 * When a page has drawn everything it sets <body data-plots="ready"> (or "error"). */
"use strict";

const Pages = (() => {
  async function getJSON(url) {
    const response = await fetch(url, { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.json();
  }

  function byId(id) { return document.getElementById(id); }

  // A figure (a Vega-Lite spec from service/figures/, served by /api/v1/.../figures) drawn
  // by vega-embed as SVG; its menu offers SVG/PNG downloads, not the online editor.
  async function embed(el, spec) {
    const result = await vegaEmbed(el, spec, {
      renderer: "svg",
      actions: { export: true, source: false, compiled: false, editor: false },
    });
    el.dataset.figure = "ready";
    return result.view;
  }

  function done(promise) {
    return promise.then(
      () => { document.body.dataset.plots = "ready"; },
      (err) => {
        document.body.dataset.plots = "error";
        const note = document.createElement("p");
        note.className = "error";
        note.textContent = `could not draw the plots: ${err.message}`;
        document.querySelector("main").prepend(note);
        throw err;
      },
    );
  }

  const positive = (ys) => ys.some((v) => typeof v === "number" && v > 0)
    && ys.every((v) => v === null || v === undefined || !Number.isFinite(v) || v > 0);

  return { getJSON, byId, embed, done, positive };
})();
