/* study.js: an Optuna study's page (Pages.study(id)): its charts, and the trials table
 * sorted by the column whose header is clicked (again: the other direction). */
"use strict";

(() => {
  const { getJSON, byId, embed, done } = Pages;

  const FIGURES = ["history", "parallel", "slices", "importances"];

  // Sort a table's body by column `index`: numbers by value (empty cells last whichever the
  // direction), text alphabetically. Each cell's raw value is its data-value.
  function sortBy(table, th) {
    const index = [...th.parentNode.children].indexOf(th);
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of table.querySelectorAll("th[aria-sort]")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const numeric = th.dataset.sort === "num";
    const key = (row) => row.children[index].dataset.value ?? row.children[index].textContent;
    const body = table.tBodies[0];
    const rows = [...body.rows];
    rows.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      if (x === "" || y === "") return (x === "") - (y === "");
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    body.append(...rows);
  }

  function sortable(table) {
    for (const th of table.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => sortBy(table, th));
    }
  }

  function study(id) {
    sortable(byId("trials"));
    return done((async () => {
      const answer = await getJSON(`/api/v1/studies/${id}/figures`);
      const names = FIGURES.concat("pareto" in answer.figures ? ["pareto"] : []);
      if ("pareto" in answer.figures) byId("pareto-figure").hidden = false;
      await Promise.all(names.map((name) => embed(byId(`plot-${name}`), answer.figures[name])));
    })());
  }

  Pages.study = study;
})();
