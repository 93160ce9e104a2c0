/* compare.js: several runs overlaid (Pages.compare(ids)): the figure served by
 * /api/v1/figures/compare (service/figures/compare.py), and the table's swatches in the
 * figure's own run colours. */
"use strict";

(() => {
  const { getJSON, byId, embed, done } = Pages;

  function compare(ids) {
    return done((async () => {
      const served = await getJSON(`/api/v1/figures/compare?runs=${ids.join(",")}`);
      const spec = served.figures.curves;
      const colours = spec.config.range.category;
      document.querySelectorAll(".swatch").forEach((s) => {
        s.style.background = colours[Number(s.dataset.index) % colours.length];
      });
      await embed(byId("plot-curves"), spec);
    })());
  }

  Pages.compare = compare;
})();
