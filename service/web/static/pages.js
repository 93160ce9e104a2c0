/* pages.js: what every page shares (fetching JSON, drawing a figure spec with vega-embed,
 * reporting when the page is drawn). Each page's own script (run.js, sweep.js, compare.js,
 * study.js) adds its entry point: Pages.run(id), Pages.sweep(id, status), Pages.compare(ids),
 * Pages.study(id).
 * Pages.fmt(v) rounds a number for people (3 significant digits).
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
    el.view = result.view; // for the tests and the console: the live Vega view
    el.dataset.figure = "ready";
    return result.view;
  }

  // A number for people: 3 significant digits, exponent form when very small or large
  // (full precision stays in the JSON and in the charts' tooltips).
  function fmt(v) {
    if (typeof v !== "number" || !Number.isFinite(v)) return v == null ? "—" : String(v);
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
    return String(+v.toPrecision(3));
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

  return { getJSON, byId, embed, done, fmt };
})();
