/* schedule.js: a schedule's page (Pages.schedule(id)): its trend plot. */
"use strict";

(() => {
  const { getJSON, byId, embed, done } = Pages;

  function schedule(id) {
    return done((async () => {
      const answer = await getJSON(`/api/v1/schedules/${id}/figures`);
      await embed(byId("plot-trend"), answer.figures.trend);
    })());
  }

  Pages.schedule = schedule;
})();
