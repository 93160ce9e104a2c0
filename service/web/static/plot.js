/* plot.js: the small SVG plotting library of the plateau-bench pages. No dependencies and no
 * network: it draws what the pages fetch from /api/v1.
 *
 *   Plot.lines(el, spec)    line / point series on linear or log axes, with shaded x-bands
 *                           (plateaus), reference lines and event ticks (clip events)
 *   Plot.contour(el, spec)  a 2-D grid as filled cells plus iso-lines (marching squares),
 *                           with a marker (the run's own parameters)
 *   Plot.bars(el, spec)     horizontal bars (parameter importances)
 *   Plot.empty(el, text)    a note where there is nothing to draw ("not probed")
 *
 * Every drawing is an <svg> whose parts carry classes (series, band, event, cell, iso,
 * marker), so tests can check what was drawn.
 */
"use strict";

const Plot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const MAX_POINTS = 2000; // per series; longer curves keep each bucket's min and max

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
    return String(+v.toPrecision(3));
  }

  // Labels with just enough decimals to tell neighbouring ticks apart.
  function tickLabels(ticks, log) {
    if (log || ticks.length < 2) return fmt;
    const step = Math.abs(ticks[1] - ticks[0]);
    const big = Math.max(...ticks.map(Math.abs));
    if (big >= 1e5 || big < 1e-3) {
      const digits = Math.min(6, Math.max(0, Math.ceil(Math.log10(big / step))));
      return (v) => (v === 0 ? "0" : v.toExponential(digits).replace("e+", "e"));
    }
    const decimals = Math.min(10, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
    return (v) => v.toFixed(decimals);
  }

  function linearTicks(lo, hi, n) {
    const raw = (hi - lo) / (n || 5);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const r = raw / mag;
    const step = mag * (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : +t.toPrecision(12));
    }
    return ticks;
  }

  function logTicks(lo, hi) {
    const a = Math.floor(Math.log10(lo));
    const b = Math.ceil(Math.log10(hi));
    const mantissas = b - a <= 2 ? [1, 2, 5] : [1];
    let ticks = [];
    for (let e = a; e <= b; e++) {
      for (const m of mantissas) {
        const t = m * Math.pow(10, e);
        if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(+t.toPrecision(12));
      }
    }
    while (ticks.length > 8) ticks = ticks.filter((_, i) => i % 2 === 0);
    if (ticks.length < 2) ticks = linearTicks(lo, hi, 3).filter((t) => t > 0);
    return ticks;
  }

  // The [lo, hi] of the finite values (positive ones on a log axis), padded a little.
  function extent(values, log, pad) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) {
      if (!finite(v) || (log && v <= 0)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo > hi) return null;
    if (log) {
      if (lo === hi) return [lo / 2, hi * 2];
      const f = pad ? Math.pow(hi / lo, 0.04) : 1;
      return [lo / f, hi * f];
    }
    if (lo === hi) {
      const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
      return [lo - d, hi + d];
    }
    const d = pad ? (hi - lo) * 0.04 : 0;
    return [lo - d, hi + d];
  }

  function scale(lo, hi, r0, r1, log) {
    if (log) {
      const a = Math.log10(lo);
      const b = Math.log10(hi);
      return (v) => r0 + ((Math.log10(v) - a) / (b - a)) * (r1 - r0);
    }
    return (v) => r0 + ((v - lo) / (hi - lo)) * (r1 - r0);
  }

  // Keep at most ~MAX_POINTS points: the first, last, and each bucket's min and max, in order.
  function decimate(xs, ys) {
    const n = Math.min(xs.length, ys.length);
    if (n <= MAX_POINTS) return [xs.slice(0, n), ys.slice(0, n)];
    const buckets = MAX_POINTS / 2;
    const size = n / buckets;
    const ox = [];
    const oy = [];
    for (let b = 0; b < buckets; b++) {
      const start = Math.floor(b * size);
      const end = Math.min(n, Math.floor((b + 1) * size));
      let iMin = -1;
      let iMax = -1;
      for (let i = start; i < end; i++) {
        if (!finite(ys[i])) { // keep gaps: they end a path
          ox.push(xs[i]); oy.push(null); continue;
        }
        if (iMin < 0 || ys[i] < ys[iMin]) iMin = i;
        if (iMax < 0 || ys[i] > ys[iMax]) iMax = i;
      }
      for (const i of iMin < 0 ? [] : iMin === iMax ? [iMin] : [Math.min(iMin, iMax), Math.max(iMin, iMax)]) {
        ox.push(xs[i]); oy.push(ys[i]);
      }
    }
    return [ox, oy];
  }

  function empty(container, text) {
    container.textContent = "";
    const p = document.createElement("p");
    p.className = "plot-empty";
    p.textContent = text;
    container.appendChild(p);
    return null;
  }

  // An <svg> with axes, ticks, grid and labels; returns the svg and the two scales.
  function frame(container, spec, xr, yr) {
    const W = spec.width || 640;
    const H = spec.height || 280;
    const m = { l: 62, r: spec.marginRight || 20, t: 12, b: 42 };
    container.textContent = "";
    const svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "plot-svg", role: "img",
      "aria-label": spec.title || spec.ylabel || "plot", preserveAspectRatio: "xMidYMid meet",
    }, container);
    const x = scale(xr[0], xr[1], m.l, W - m.r, spec.logX);
    const y = scale(yr[0], yr[1], H - m.b, m.t, spec.logY);
    const area = { x0: m.l, x1: W - m.r, y0: m.t, y1: H - m.b };
    const clipId = `clip${Math.random().toString(36).slice(2, 9)}`;
    const defs = el("defs", {}, svg);
    const clip = el("clipPath", { id: clipId }, defs);
    el("rect", { x: area.x0, y: area.y0, width: area.x1 - area.x0, height: area.y1 - area.y0 }, clip);
    const grid = el("g", { class: "grid" }, svg);
    // A log axis spanning less than a decade reads better with evenly spaced values.
    const xLog = spec.logX && xr[1] / xr[0] >= 10;
    const yLog = spec.logY && yr[1] / yr[0] >= 10;
    const xt = xLog ? logTicks(xr[0], xr[1]) : linearTicks(xr[0], xr[1], 6);
    const yt = yLog ? logTicks(yr[0], yr[1]) : linearTicks(yr[0], yr[1], 5);
    const xf = tickLabels(xt, xLog);
    const yf = tickLabels(yt, yLog);
    for (const t of xt) {
      const px = x(t);
      el("line", { x1: px, x2: px, y1: area.y0, y2: area.y1 }, grid);
      el("text", { x: px, y: area.y1 + 15, class: "tick", "text-anchor": "middle" }, grid)
        .textContent = xf(t);
    }
    for (const t of yt) {
      const py = y(t);
      el("line", { x1: area.x0, x2: area.x1, y1: py, y2: py }, grid);
      el("text", { x: area.x0 - 6, y: py + 4, class: "tick", "text-anchor": "end" }, grid)
        .textContent = yf(t);
    }
    el("rect", {
      x: area.x0, y: area.y0, width: area.x1 - area.x0, height: area.y1 - area.y0, class: "frame",
    }, svg);
    if (spec.xlabel) {
      el("text", { x: (area.x0 + area.x1) / 2, y: H - 6, class: "label", "text-anchor": "middle" }, svg)
        .textContent = spec.xlabel;
    }
    if (spec.ylabel) {
      el("text", {
        x: 14, y: (area.y0 + area.y1) / 2, class: "label", "text-anchor": "middle",
        transform: `rotate(-90 14 ${(area.y0 + area.y1) / 2})`,
      }, svg).textContent = spec.ylabel;
    }
    const body = el("g", { "clip-path": `url(#${clipId})` }, svg);
    return { svg, body, x, y, area, W, H };
  }

  function legend(svg, area, entries) {
    if (entries.length < 2 && !(entries[0] && entries[0].always)) return;
    const g = el("g", { class: "legend" }, svg);
    const shown = entries.slice(0, 12);
    const longest = Math.max(...shown.map((e) => String(e.name).length));
    const boxW = 30 + 6.2 * longest;
    el("rect", {
      x: area.x1 - 4 - boxW, y: area.y0 + 2, width: boxW, height: 6 + 14 * shown.length,
      fill: "white", "fill-opacity": 0.82, rx: 3,
    }, g);
    let row = 0;
    for (const e of shown) {
      const y = area.y0 + 12 + row * 14;
      const x = area.x1 - 8;
      el("line", {
        x1: x - 18, x2: x - 4, y1: y - 4, y2: y - 4, stroke: e.color,
        "stroke-width": e.band ? 8 : 2, "stroke-opacity": e.band ? 0.35 : 1,
        "stroke-dasharray": e.dash || null,
      }, g);
      el("text", { x: x - 22, y, "text-anchor": "end" }, g).textContent = e.name;
      row++;
    }
  }

  /* spec: {series: [{name, x, y, color, width, dash, markers, line}], xlabel, ylabel, logX,
   *        logY, bands: [{x0, x1, title}], hlines: [{y, label, dash}], vlines: [{x, label}],
   *        events: {x: [...], label}, empty: "text when nothing to draw"} */
  function lines(container, spec) {
    const series = (spec.series || []).map((s, i) => {
      const [x, y] = decimate(s.x || [], s.y || []);
      // A line through fewer than three points hides them: show the points themselves.
      const markers = s.markers || y.filter(finite).length < 3;
      return { ...s, x, y, markers, color: s.color || COLORS[i % COLORS.length] };
    });
    const ys = [];
    const xs = [];
    for (const s of series) {
      for (let i = 0; i < s.x.length; i++) {
        if (finite(s.y[i]) && (!spec.logY || s.y[i] > 0)) { xs.push(s.x[i]); ys.push(s.y[i]); }
      }
    }
    if (!ys.length) return empty(container, spec.empty || "no data");
    for (const h of spec.hlines || []) ys.push(h.y);
    for (const b of spec.bands || []) xs.push(b.x0, b.x1);
    const xr = spec.xDomain || extent(xs, spec.logX, series.some((s) => s.line === false));
    const yr = spec.yDomain || extent(ys, spec.logY, true);
    const f = frame(container, spec, xr, yr);
    const { svg, body, x, y, area } = f;
    const entries = [];

    for (const b of spec.bands || []) {
      const x0 = Math.max(area.x0, x(b.x0));
      const x1 = Math.min(area.x1, x(b.x1));
      const r = el("rect", {
        x: x0, y: area.y0, width: Math.max(1, x1 - x0), height: area.y1 - area.y0,
        class: "band", fill: b.color || "#f5a623", "fill-opacity": 0.22,
      }, body);
      if (b.title) el("title", {}, r).textContent = b.title;
    }
    if ((spec.bands || []).length) {
      entries.push({ name: spec.bandLabel || "plateau", color: "#f5a623", band: true });
    }
    for (const h of spec.hlines || []) {
      if (!finite(h.y) || (spec.logY && h.y <= 0)) continue;
      el("line", {
        x1: area.x0, x2: area.x1, y1: y(h.y), y2: y(h.y), class: "ref",
        stroke: h.color || "#666", "stroke-dasharray": h.dash || "5 4",
      }, body);
      if (h.label) entries.push({ name: h.label, color: h.color || "#666", dash: h.dash || "5 4" });
    }
    for (const v of spec.vlines || []) {
      el("line", {
        x1: x(v.x), x2: x(v.x), y1: area.y0, y2: area.y1, class: "ref",
        stroke: v.color || "#999", "stroke-dasharray": v.dash || "2 3",
      }, body);
    }
    for (const s of series) {
      const ok = (i) => finite(s.y[i]) && finite(s.x[i]) && (!spec.logY || s.y[i] > 0)
        && (!spec.logX || s.x[i] > 0);
      if (s.line !== false) {
        let d = "";
        let pen = false;
        for (let i = 0; i < s.x.length; i++) {
          if (!ok(i)) { pen = false; continue; }
          d += `${pen ? "L" : "M"}${x(s.x[i]).toFixed(1)} ${y(s.y[i]).toFixed(1)}`;
          pen = true;
        }
        if (d) {
          el("path", {
            d, class: "series", fill: "none", stroke: s.color, "stroke-width": s.width || 1.5,
            "stroke-dasharray": s.dash || null, "stroke-opacity": s.opacity || null,
            "data-name": s.name,
          }, body);
        }
      }
      if (s.markers) {
        const g = el("g", { class: "markers", fill: s.color, "data-name": s.name }, body);
        for (let i = 0; i < s.x.length; i++) {
          if (!ok(i)) continue;
          const c = el("circle", { cx: x(s.x[i]), cy: y(s.y[i]), r: s.markerSize || 2.6 }, g);
          el("title", {}, c).textContent = `${s.name}: ${fmt(s.x[i])}, ${fmt(s.y[i])}`;
        }
      }
      if (s.name && s.legend !== false) entries.push({ name: s.name, color: s.color, dash: s.dash });
    }
    if (spec.events && spec.events.x && spec.events.x.length) {
      const g = el("g", { class: "events", stroke: spec.events.color || "#d62728" }, body);
      for (const v of spec.events.x) {
        el("line", { x1: x(v), x2: x(v), y1: area.y1, y2: area.y1 - 10, class: "event" }, g);
      }
      entries.push({ name: spec.events.label || "events", color: spec.events.color || "#d62728" });
    }
    legend(svg, area, entries.length === 1 ? [{ ...entries[0], always: true }] : entries);
    return svg;
  }

  // A perceptually ordered colormap (viridis anchors), t in [0, 1].
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colormap(t) {
    const u = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(u));
    const f = u - i;
    const c = VIRIDIS[i].map((a, k) => Math.round(a + f * (VIRIDIS[i + 1][k] - a)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // Segments of the level set z = level over the grid (marching squares, linear on edges).
  function isoSegments(xs, ys, z, level) {
    const segs = [];
    const lerp = (p, q, a, b) => (a === b ? (p + q) / 2 : p + ((level - a) / (b - a)) * (q - p));
    for (let i = 0; i + 1 < xs.length; i++) {
      for (let j = 0; j + 1 < ys.length; j++) {
        const a = z[i][j]; const b = z[i + 1][j]; const c = z[i + 1][j + 1]; const d = z[i][j + 1];
        if (![a, b, c, d].every(finite)) continue;
        const pts = [];
        // edges in order: (a,b) bottom, (b,c) right, (c,d) top, (d,a) left
        if ((a > level) !== (b > level)) pts.push([lerp(xs[i], xs[i + 1], a, b), ys[j]]);
        if ((b > level) !== (c > level)) pts.push([xs[i + 1], lerp(ys[j], ys[j + 1], b, c)]);
        if ((c > level) !== (d > level)) pts.push([lerp(xs[i + 1], xs[i], c, d), ys[j + 1]]);
        if ((d > level) !== (a > level)) pts.push([xs[i], lerp(ys[j + 1], ys[j], d, a)]);
        if (pts.length === 2) segs.push([pts[0], pts[1]]);
        if (pts.length === 4) { // a saddle cell: the centre decides which corners connect
          const centre = (a + b + c + d) / 4;
          if ((centre > level) === (a > level)) segs.push([pts[0], pts[1]], [pts[2], pts[3]]);
          else segs.push([pts[0], pts[3]], [pts[1], pts[2]]);
        }
      }
    }
    return segs;
  }

  /* spec: {xs, ys, z (z[i][j] at xs[i], ys[j]), levels, logZ, marker: {x, y, label},
   *        xlabel, ylabel, zlabel} */
  function contour(container, spec) {
    const { xs, ys, z } = spec;
    const flat = [].concat(...(z || [])).filter(finite);
    if (!xs || !ys || !flat.length) return empty(container, spec.empty || "no surface");
    const logZ = spec.logZ !== false && flat.every((v) => v > 0);
    const tz = (v) => (logZ ? Math.log10(v) : v);
    const lo = Math.min(...flat.map(tz));
    const hi = Math.max(...flat.map(tz));
    const norm = (v) => (hi > lo ? (tz(v) - lo) / (hi - lo) : 0.5);
    const f = frame(container, { ...spec, height: spec.height || 360, marginRight: 70 },
      [xs[0], xs[xs.length - 1]], [ys[0], ys[ys.length - 1]]);
    const { svg, body, x, y, area } = f;
    // Cells centred on the grid points, edges halfway between neighbours.
    const edges = (v) => v.map((_, i) => (i === 0 ? v[0] : (v[i - 1] + v[i]) / 2)).concat([v[v.length - 1]]);
    const ex = edges(xs);
    const ey = edges(ys);
    const cells = el("g", { class: "cells" }, body);
    for (let i = 0; i < xs.length; i++) {
      for (let j = 0; j < ys.length; j++) {
        const v = z[i][j];
        if (!finite(v)) continue;
        const x0 = x(ex[i]); const x1 = x(ex[i + 1]); const y0 = y(ey[j + 1]); const y1 = y(ey[j]);
        const r = el("rect", {
          x: x0, y: y0, width: x1 - x0 + 0.5, height: y1 - y0 + 0.5, fill: colormap(norm(v)), class: "cell",
        }, cells);
        el("title", {}, r).textContent = `α ${fmt(xs[i])}, β ${fmt(ys[j])}: loss ${fmt(v)}`;
      }
    }
    const nLevels = spec.levels || 10;
    const isoGroup = el("g", { class: "isolines" }, body);
    for (let k = 1; k <= nLevels; k++) {
      const t = lo + ((hi - lo) * k) / (nLevels + 1);
      const level = logZ ? Math.pow(10, t) : t;
      const segs = isoSegments(xs, ys, z, level);
      if (!segs.length) continue;
      const d = segs.map(([p, q]) => `M${x(p[0]).toFixed(1)} ${y(p[1]).toFixed(1)}L${x(q[0]).toFixed(1)} ${y(q[1]).toFixed(1)}`).join("");
      el("path", { d, class: "iso", fill: "none", stroke: "rgba(255,255,255,0.75)", "stroke-width": 0.9, "data-level": level }, isoGroup);
    }
    if (spec.marker) {
      const mx = x(spec.marker.x);
      const my = y(spec.marker.y);
      const star = [];
      for (let k = 0; k < 10; k++) {
        const r = k % 2 ? 4 : 10;
        const a = -Math.PI / 2 + (k * Math.PI) / 5;
        star.push(`${(mx + r * Math.cos(a)).toFixed(1)},${(my + r * Math.sin(a)).toFixed(1)}`);
      }
      const m = el("polygon", { points: star.join(" "), class: "marker", fill: "#e8112d", stroke: "white", "stroke-width": 1 }, svg);
      el("title", {}, m).textContent = spec.marker.label || "the run";
    }
    // colour bar
    const cb = el("g", { class: "colorbar" }, svg);
    const bx = area.x1 + 16;
    const steps = 40;
    const hgt = area.y1 - area.y0;
    for (let k = 0; k < steps; k++) {
      el("rect", {
        x: bx, y: area.y1 - ((k + 1) * hgt) / steps, width: 12, height: hgt / steps + 0.5,
        fill: colormap(k / (steps - 1)),
      }, cb);
    }
    const inv = (t) => (logZ ? Math.pow(10, t) : t);
    const zf = (v) => String(+v.toPrecision(5));
    el("text", { x: bx + 15, y: area.y1, class: "tick" }, cb).textContent = zf(inv(lo));
    el("text", { x: bx + 15, y: area.y0 + 8, class: "tick" }, cb).textContent = zf(inv(hi));
    if (spec.zlabel) {
      el("text", { x: bx + 15, y: (area.y0 + area.y1) / 2, class: "tick" }, cb).textContent = spec.zlabel;
    }
    return svg;
  }

  /* spec: {items: [{label, value}], xlabel} */
  function bars(container, spec) {
    const items = (spec.items || []).filter((it) => finite(it.value));
    if (!items.length) return empty(container, spec.empty || "no data");
    const W = 640;
    const rowH = 22;
    const H = 30 + rowH * items.length;
    container.textContent = "";
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot-svg", role: "img", "aria-label": spec.xlabel || "bars" }, container);
    const max = Math.max(...items.map((it) => it.value), 1e-12);
    const x0 = 180;
    items.forEach((it, k) => {
      const yy = 10 + k * rowH;
      el("text", { x: x0 - 8, y: yy + 14, "text-anchor": "end", class: "tick" }, svg).textContent = it.label;
      el("rect", { x: x0, y: yy + 2, width: ((W - x0 - 60) * it.value) / max, height: rowH - 6, fill: COLORS[0], class: "bar" }, svg);
      el("text", { x: x0 + ((W - x0 - 60) * it.value) / max + 6, y: yy + 14, class: "tick" }, svg).textContent = fmt(it.value);
    });
    return svg;
  }

  return { lines, contour, bars, empty, COLORS, fmt, isoSegments };
})();
