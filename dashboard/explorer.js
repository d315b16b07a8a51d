// The rank-plan explorer (dashboard/explorer.py): the ERR and k sliders move the totals and the LRC heatmap from
// the plans of every grid point, sent once; a rested slider tells the server (setStateValue "pick").
const VIRIDIS = ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151",
  "#bddf26", "#fde725"];
const PALETTE = Array.from({ length: 101 }, (_, i) => {  // reduction 0..100 % -> viridis, as the Vega chart drew it
  const t = (i / 100) * (VIRIDIS.length - 1), j = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - j;
  const a = VIRIDIS[j], b = VIRIDIS[j + 1];
  const c = [1, 3, 5].map((o) => Math.round(parseInt(a.substr(o, 2), 16) * (1 - f) + parseInt(b.substr(o, 2), 16) * f));
  return `rgb(${c.join(",")})`;
});
const SVG = "http://www.w3.org/2000/svg";
const REST_MS = 40;  // a released slider is sent after this long (a held-down key's repeats send once)

function el(tag, cls, parent, ns) {
  const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
  if (cls) e.setAttribute("class", cls);
  if (parent) parent.appendChild(e);
  return e;
}

function build(root, grid) {
  root.textContent = "";
  const sliders = el("div", "welore-sliders", root);
  const inputs = {};
  for (const axis of ["err", "k"]) {
    const spec = grid.axes[axis];
    const box = el("label", "welore-slider", sliders);
    const head = el("div", "welore-slider-head", box);
    el("span", "name", head).textContent = spec ? spec.label : grid.k_label;
    const shown = el("span", "shown", head);
    const input = el("input", "", box);
    Object.assign(input, { type: "range", min: spec ? spec.min : 0, max: spec ? spec.max : 1,
      step: spec ? spec.step : 0.005, disabled: !spec });
    input.setAttribute("aria-label", spec ? spec.label : grid.k_label);
    input.dataset.axis = axis;
    inputs[axis] = { input, shown };
  }
  const metrics = el("div", "welore-metrics", root);
  const cells = grid.labels.map((label) => {
    const m = el("div", "welore-metric", metrics);
    el("div", "label", m).textContent = label;
    return { box: m, value: el("div", "value", m), delta: el("div", "delta", m) };
  });
  const cost = el("div", "welore-costs", root);  // what this model's plans were measured to cost: one curve a measure
  const wrap = el("div", "welore-heatmap-wrap", root);
  const svg = el("svg", "welore-heatmap", wrap, true);
  const tip = el("div", "welore-tip", wrap);
  return { inputs, cells, wrap, svg, tip, rects: [], dots: [], cost, measured: [] };
}

function layout(ui, grid) {  // geometry of the heatmap for the current width (again when the page is resized)
  const { svg } = ui;
  svg.textContent = "";
  const width = Math.max(360, ui.wrap.clientWidth || 800);
  const left = 56, right = 86, top = 26, bottom = 96;
  const cols = grid.kinds.length, rows = grid.blocks.length;
  const cellH = Math.max(8, Math.min(16, 480 / rows)), height = top + rows * cellH + bottom;
  const cellW = (width - left - right) / cols;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const title = el("text", "title", svg, true);
  Object.assign(title, { textContent: "Rank reduction per layer (● = LRC, factored and fine-tuned)" });
  title.setAttribute("x", left);
  title.setAttribute("y", 16);
  ui.rects = grid.names.map((_, i) => {
    const r = el("rect", "cell", svg, true);
    r.setAttribute("x", left + grid.col[i] * cellW);
    r.setAttribute("y", top + grid.row[i] * cellH);
    r.setAttribute("width", Math.max(1, cellW - 1));
    r.setAttribute("height", Math.max(1, cellH - 1));
    r.dataset.i = i;
    return r;
  });
  ui.dots = grid.names.map((_, i) => {
    const c = el("circle", "lrc", svg, true);
    c.setAttribute("cx", left + (grid.col[i] + 0.5) * cellW - 0.5);
    c.setAttribute("cy", top + (grid.row[i] + 0.5) * cellH - 0.5);
    c.setAttribute("r", Math.min(3, cellH / 4));
    return c;
  });
  const every = Math.ceil(rows / Math.floor((rows * cellH) / 12));  // block labels that fit
  grid.blocks.forEach((b, j) => {
    if (j % every) return;
    const t = el("text", "tick", svg, true);
    t.textContent = b;
    t.setAttribute("x", left - 6);
    t.setAttribute("y", top + (j + 0.5) * cellH + 4);
    t.setAttribute("text-anchor", "end");
  });
  grid.kinds.forEach((k, j) => {
    const t = el("text", "tick", svg, true);
    t.textContent = k;
    const x = left + (j + 0.5) * cellW, y = top + rows * cellH + 10;
    t.setAttribute("transform", `translate(${x},${y}) rotate(-30)`);
    t.setAttribute("text-anchor", "end");
  });
  const axisY = el("text", "axis", svg, true);
  axisY.textContent = "block";
  axisY.setAttribute("transform", `translate(14,${top + (rows * cellH) / 2}) rotate(-90)`);
  const axisX = el("text", "axis", svg, true);
  axisX.textContent = "layer type";
  axisX.setAttribute("x", left + (cols * cellW) / 2);
  axisX.setAttribute("y", height - 6);
  const barX = width - right + 22, barH = Math.min(160, rows * cellH);
  PALETTE.forEach((colour, i) => {  // the colour bar, 0 % at the bottom
    const r = el("rect", "", svg, true);
    r.setAttribute("x", barX);
    r.setAttribute("y", top + barH * (1 - (i + 1) / 101));
    r.setAttribute("width", 14);
    r.setAttribute("height", barH / 101 + 0.5);
    r.setAttribute("fill", colour);
  });
  [[0, barH], [50, barH / 2], [100, 0]].forEach(([v, y]) => {
    const t = el("text", "tick", svg, true);
    t.textContent = v;
    t.setAttribute("x", barX + 18);
    t.setAttribute("y", top + y + 4);
  });
  const legend = el("text", "axis", svg, true);  // below the bar: the title above runs the whole width
  legend.textContent = "reduction %";
  legend.setAttribute("x", barX - 4);
  legend.setAttribute("y", top + barH + 18);
}

function paint(ui, grid, point) {
  ui.ranks = point.ranks;
  ui.lrc = point.lrc;  // the core's partition: no rule is applied here
  for (let i = 0; i < point.ranks.length; i++) {
    const reduction = 1 - point.ranks[i] / grid.full[i];
    ui.rects[i].setAttribute("fill", PALETTE[Math.round(reduction * 100)]);
    ui.dots[i].style.display = point.lrc[i] ? "" : "none";
  }
  point.metrics.forEach(([value, help, delta, worse], j) => {
    const c = ui.cells[j];
    c.value.textContent = value;
    c.box.title = help;
    c.delta.textContent = delta;
    c.delta.className = worse ? "delta up" : "delta";
  });
  drawCost(ui, point.err);
}

function readOff(points, err) {  // the curve at err: measured, interpolated between two points, or outside them
  const first = points[0][0], last = points[points.length - 1][0];
  if (err < first - 1e-9 || err > last + 1e-9) return { value: null, how: `not measured beyond ${first}-${last} %` };
  for (let i = 0; i < points.length; i++) {
    const [e, v] = points[i];
    if (Math.abs(e - err) < 1e-9) return { value: v, how: "measured" };
    if (i + 1 < points.length && err < points[i + 1][0]) {
      const [e2, v2] = points[i + 1], f = (err - e) / (e2 - e);
      return { value: v + f * (v2 - v), how: `interpolated between the measured ${e} and ${e2} %` };
    }
  }
  return { value: points[points.length - 1][1], how: "measured" };
}

function drawCost(ui, err) {  // every measured curve (perplexity, then accuracy per task), the slider's ERR marked
  ui.cost.textContent = "";
  const curves = (ui.measured || []).filter((m) => m.points.length);
  if (!curves.length) {
    el("div", "welore-cost-text", el("div", "welore-cost", ui.cost)).textContent = "Measured cost: no compression "
      + "of this model with this strategy is in the run registry yet (Compress & evaluate, or welore sweep).";
    return;
  }
  curves.forEach((m) => drawCurve(el("div", "welore-cost", ui.cost), m, err));
}

function drawCurve(box, m, err) {  // one curve: its points, the dense value dashed, the slider's ERR read off
  box.dataset.label = m.label;
  const svg = el("svg", "welore-cost-chart", box, true), text = el("div", "welore-cost-text", box);
  const W = 300, H = 100, L = 46, R = 18, T = 8, B = 24;
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const ys = m.points.map((p) => p[1]).concat(m.dense === null ? [] : [m.dense]);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const X = (e) => L + (e / 100) * (W - L - R), Y = (v) => T + (1 - (v - lo) / span) * (H - T - B);
  const line = (x1, y1, x2, y2, cls) => {
    const l = el("line", cls, svg, true);
    Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
  };
  if (m.dense !== null) line(X(0), Y(m.dense), X(100), Y(m.dense), "dense");
  const path = el("polyline", "measured", svg, true);
  path.setAttribute("points", m.points.map(([e, v]) => `${X(e)},${Y(v)}`).join(" "));
  m.points.forEach(([e, v]) => {
    const c = el("circle", "measured", svg, true);
    c.setAttribute("cx", X(e));
    c.setAttribute("cy", Y(v));
    c.setAttribute("r", 3);
  });
  line(X(err), T, X(err), H - B, "slider");
  [[lo, H - B], [hi, T + 8]].forEach(([v, y]) => {
    const t = el("text", "tick", svg, true);
    t.textContent = v.toPrecision(4);
    t.setAttribute("x", L - 4);
    t.setAttribute("y", y);
    t.setAttribute("text-anchor", "end");
  });
  [0, 50, 100].forEach((e) => {
    const t = el("text", "tick", svg, true);
    t.textContent = `${e} %`;
    t.setAttribute("x", X(e));
    t.setAttribute("y", H - 8);
    t.setAttribute("text-anchor", "middle");
  });
  const { value, how } = readOff(m.points, err);
  text.textContent = `${m.label} (${m.setting}; ${m.higher ? "higher" : "lower"} is better) at ERR ${err.toFixed(2)} %: `
    + (value === null ? "-" : value.toFixed(3)) + ` (${how}${m.dense === null ? "" : `; dense ${m.dense.toFixed(3)}`})`;
}

function place(ui, point, moved) {  // the slider that did not move follows the plan, its label exact
  const { err, k } = ui.inputs;
  if (moved !== "err") err.input.value = point.err;
  err.shown.textContent = moved === "err" ? `${Number(err.input.value).toFixed(1)} %` : `${point.err.toFixed(2)} %`;
  if (moved !== "k" && !k.input.disabled) k.input.value = point.k === null ? 0 : Math.min(1, point.k);
  k.shown.textContent = k.input.disabled ? "-" : moved === "k" ? Number(k.input.value).toFixed(3)
    : point.k === null ? "-" : point.k.toFixed(5);
}

function pointOf(spec, value) {
  let best = 0;
  for (let i = 1; i < spec.targets.length; i++) {
    if (Math.abs(spec.targets[i] - value) < Math.abs(spec.targets[best] - value)) best = i;
  }
  return { err: spec.err[best], k: spec.k[best], ranks: spec.ranks[best], lrc: spec.lrc[best],
    metrics: spec.metrics[best], target: spec.targets[best] };
}

function nextSeq() {  // page-wide and rising: a pick never repeats one the session stored before a remount
  window.__weloreSeq = Math.max(window.__weloreSeq || 0, Date.now()) + 1;
  return window.__weloreSeq;
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let root = parentElement.querySelector(".welore-explorer");
  if (!root) root = el("div", "welore-explorer", parentElement);
  let st = root.__welore;
  if (!st || st.id !== data.id) {  // a new model, strategy, normalisation or LRC ratio: a new grid
    // The server sends a grid until a pick says the browser holds it; held per page, across remounts.
    const grids = (window.__weloreGrids ||= new Map());
    if (data.grid) grids.set(data.id, JSON.parse(data.grid));
    const grid = grids.get(data.id);
    if (!grid) {  // the page lost it (a reload of the script, a cleared cache): ask for it again
      setStateValue("pick", { axis: null, value: null, seq: nextSeq(), have: null });
      return;
    }
    while (grids.size > 4) grids.delete(grids.keys().next().value);
    if (st && st.observer) st.observer.disconnect();
    st = root.__welore = { id: data.id, grid, ui: build(root, grid), sentSeq: 0, timer: null, shown: null,
      moving: false };
    layout(st.ui, grid);
    root.dataset.grid = data.id;  // which grid is drawn (as data-synced says whether the page has caught up)
    st.width = root.clientWidth;
    st.observer = new ResizeObserver(() => {
      if (st.width === root.clientWidth) return;
      st.width = root.clientWidth;
      layout(st.ui, grid);
      if (st.ui.point) paint(st.ui, grid, st.ui.point);
    });
    st.observer.observe(root);
    for (const axis of ["err", "k"]) {
      const input = st.ui.inputs[axis].input;
      input.addEventListener("input", () => {  // every position while dragging or stepping: redraw here
        const point = pointOf(grid.axes[axis], Number(input.value));
        st.ui.point = point;
        paint(st.ui, grid, point);
        place(st.ui, point, axis);
        st.moving = true;
        root.dataset.synced = "false";
      });
      const commit = () => {  // released or stepped: tell the server once the key repeats stop
        if (!st.moving) return;  // (a drag that ends where it began fires no change: pointerup and blur do)
        st.moving = false;
        const value = st.ui.point.target;
        clearTimeout(st.timer);
        st.timer = setTimeout(() => {
          st.timer = null;
          st.sentSeq = nextSeq();
          setStateValue("pick", { axis, value, seq: st.sentSeq, have: st.id });
        }, REST_MS);
      };
      for (const event of ["change", "pointerup", "keyup", "blur"]) input.addEventListener(event, commit);
    }
    st.ui.wrap.addEventListener("mousemove", (e) => {  // the layer under the pointer, at the ranks shown
      const i = e.target.dataset ? e.target.dataset.i : undefined, tip = st.ui.tip;
      if (i === undefined || !st.ui.ranks) { tip.style.display = "none"; return; }
      const r = st.ui.ranks[i], full = grid.full[i], reduction = 1 - r / full;
      tip.textContent = `${grid.names[i]} · rank ${r} / ${full} · reduction ${(100 * reduction).toFixed(1)} % · `
        + (st.ui.lrc[i] ? "LRC" : "N-LRC");
      const box = st.ui.wrap.getBoundingClientRect();  // offsetX of an SVG child is not relative to the wrap
      tip.style.display = "block";
      tip.style.left = `${e.clientX - box.left + 12}px`;
      tip.style.top = `${e.clientY - box.top + 12}px`;
    });
    st.ui.wrap.addEventListener("mouseleave", () => { st.ui.tip.style.display = "none"; });
  }
  // The server's plan, which names the last pick it applied (seq): drawn unless a slider is moving or about to
  // send, or it answers an older pick than the one in flight. data-synced tells tests, benches and styles whether
  // the page below has caught up with the sliders.
  const cur = data.current;
  const measured = JSON.stringify(cur.measured);  // new measurements reach the curve even when the plan stays
  if (st.measured !== measured) {
    st.measured = measured;
    st.ui.measured = cur.measured;
    if (st.ui.point && !st.moving) drawCost(st.ui, st.ui.point.err);
  }
  if (st.moving || st.timer || (cur.seq || 0) < st.sentSeq) return;
  st.sentSeq = 0;
  root.dataset.synced = "true";
  const key = JSON.stringify([cur.axis, cur.value, cur.err, cur.k]);
  if (st.shown === key) return;
  st.shown = key;
  st.ui.point = { err: cur.err, k: cur.k, ranks: cur.ranks, lrc: cur.lrc, metrics: cur.metrics, target: cur.value };
  paint(st.ui, st.grid, st.ui.point);
  if (cur.axis === "err" || cur.axis === "k") st.ui.inputs[cur.axis].input.value = cur.value;
  place(st.ui, st.ui.point, cur.axis);
}
