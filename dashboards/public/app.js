// Kota Cerdas public page: reads the open-data API it is served by; no external resources.
"use strict";
const T = {
  id: { title: "Kualitas lingkungan kota", updated: "Diperbarui", air: "Udara (ISPU) per kecamatan",
        water: "Air minum", bins: "Tempat sampah perlu diangkut", source: "Sumber", lang: "English",
        station: "stasiun", stations: "stasiun", offline: "tidak melapor",
        provisional: "sementara: data 24 jam belum lengkap", effect: "Artinya", advice: "Rekomendasi",
        last: "nilai terakhir",
        comply: "titik memenuhi", none: "Tidak ada", due: "perlu diangkut", full: "terisi", noData: "belum ada data",
        dominant: "parameter dominan" },
  en: { title: "City environment", updated: "Updated", air: "Air (ISPU) by district",
        water: "Drinking water", bins: "Waste bins due for collection", source: "Source", lang: "Bahasa Indonesia",
        station: "station", stations: "stations", offline: "not reporting",
        provisional: "provisional: 24-hour data incomplete", effect: "Meaning", advice: "What to do",
        last: "last value",
        comply: "points comply", none: "None", due: "due for collection", full: "full", noData: "no data yet",
        dominant: "dominant pollutant" },
};
let lang = new URLSearchParams(location.search).get("lang") ||
           ((navigator.language || "id").toLowerCase().startsWith("id") ? "id" : "en");
let state = null;

async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + " " + r.status);
  return r.json();
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function band(legend, v) {
  let b = legend.ispu[0];
  for (const x of legend.ispu) if (x.lower !== null && v >= x.lower) b = x;
  return b;
}
function when(iso) {  // in the city's zone with its name ("WIB"), whatever the viewer's device uses
  return new Date(iso).toLocaleString(lang === "id" ? "id-ID" : "en-GB", {
    timeZone: state.legend.timezone, timeZoneName: "short", day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit" });
}
function nStations(t, n) {  // "1 station", "2 stations" (Indonesian has one form)
  return `${n} ${n === 1 ? t.station : t.stations}`;
}
function textOn(hex) {  // readable text on a band colour
  const n = parseInt(hex.slice(1), 16), r = n >> 16, g = (n >> 8) & 255, b = n & 255;
  return (0.299 * r + 0.587 * g + 0.114 * b) > 150 ? "#000" : "#fff";
}

async function load() {
  const [legend, ispu, stations, water, bins, outlines] = await Promise.all([
    get("/v1/legend"), get("/v1/air/ispu?limit=1000"), get("/v1/stations?limit=1000"),
    get("/v1/water/compliance?limit=1000"), get("/v1/waste/bins?limit=1000"),
    get("/static/public/outlines.geojson").catch(() => ({ features: [] }))]);  // the map works without
  state = { legend, ispu: ispu.data, stations: stations.data, water: water.data, bins: bins.data,
            outlines: outlines.features || [], at: ispu.meta.generated_at };
  render();
}

function render() {
  const t = T[lang], L = state.legend;
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-t]").forEach(e => { e.textContent = t[e.dataset.t]; });
  document.getElementById("lang").textContent = t.lang;
  document.getElementById("updated").textContent = when(state.at);
  document.getElementById("sources").textContent = `ISPU: ${L.ispu_source} (${L.ispu_text_source}); ` +
    `${L.water_source}` + (state.outlines.length ? `; ${lang === "id" ? "peta" : "map"}: ${state.outlines[0].properties.attribution}` : "");
  document.getElementById("translation").textContent = lang === "en" ? L.ispu_translation : "";
  const leg = document.getElementById("legend");
  leg.replaceChildren(...L.ispu.map(b => el("li", { style: `background:${b.color};color:${textOn(b.color)}` },
    `${b.lower === null ? 0 : b.lower}+ ${lang === "id" ? b.label : b.label_en}`)));

  const online = new Map(state.stations.map(s => [s.device, s]));
  // station index = pollutant "max"; stations not reporting are shown apart, not as current
  const stationIdx = state.ispu.filter(r => r.pollutant === "max");
  const byDistrict = new Map();
  for (const r of stationIdx) {
    const d = r.district || "-";
    if (!byDistrict.has(d)) byDistrict.set(d, []);
    byDistrict.get(d).push(r);
  }
  const cards = [];
  for (const [d, rows] of [...byDistrict.entries()].sort()) {
    const live = rows.filter(r => (online.get(r.device) || {}).online === 1);
    const use = live.length ? live : [];
    const li = el("li", {});
    li.append(el("div", { class: "name" }, d));
    if (!use.length) {
      // not current, so not coloured as current; but say what was last known and when, rather
      // than "no data" about a district whose stations reported until they stopped
      const last = rows.filter(r => r.value !== null).reduce((a, b) => (!a || b.time > a.time ? b : a), null);
      const lb = last && band(L, last.value);
      li.append(el("div", { class: "off" }, last
        ? `${t.last}: ISPU ${Math.round(last.value)} (${lang === "id" ? lb.label : lb.label_en}), ` +
          when(last.time)
        : t.noData), el("div", { class: "off" }, `${nStations(t, rows.length)}, ${t.offline}`));
    } else {
      const worst = use.reduce((a, b) => (b.value > a.value ? b : a));
      const b = band(L, worst.value);
      li.style.borderLeftColor = b.color;
      const pol = state.ispu.find(r => r.device === worst.device && r.pollutant !== "max" && r.value === worst.value);
      li.append(el("span", { class: "big" }, Math.round(worst.value)),
                el("span", { class: "cat", style: `background:${b.color};color:${textOn(b.color)};padding:1px 6px;border-radius:4px` },
                   lang === "id" ? b.label : b.label_en),
                el("div", { class: "detail" }, nStations(t, live.length) +
                   (pol ? ` · ${t.dominant}: ${pol.pollutant.toUpperCase()}` : "") +
                   (rows.length > live.length ? ` · ${rows.length - live.length} ${t.offline}` : "")),
                el("div", { class: "effect" }, el("b", {}, `${t.effect}: `), lang === "id" ? b.effect_id : b.effect_en),
                el("div", { class: "advice" }, el("b", {}, `${t.advice}: `), lang === "id" ? b.advice_id : b.advice_en));
      if (worst.provisional === 1) li.append(el("div", { class: "prov" }, t.provisional));
    }
    cards.push(li);
  }
  document.getElementById("districts").replaceChildren(...cards);
  drawMap(online, stationIdx);

  const wd = new Map();
  for (const r of state.water.filter(r => r.parameter === "all")) {
    const d = r.district || "-";
    const x = wd.get(d) || { ok: 0, n: 0 };
    x.n += 1; x.ok += r.compliant === 1 ? 1 : 0; wd.set(d, x);
  }
  document.getElementById("water").replaceChildren(...[...wd.entries()].sort().map(([d, x]) =>
    el("li", { class: x.ok === x.n ? "ok" : "bad" }, el("div", { class: "name" }, d),
       el("span", { class: "big" }, `${x.ok}/${x.n}`), t.comply)));

  const due = state.bins.filter(b => (b.fill ?? 0) >= L.bin_fill_due || b.full_by_tomorrow === 1)
                        .sort((a, b) => (a.priority ?? 1e9) - (b.priority ?? 1e9));
  const binCards = due.map(b => el("li", { class: "due" }, el("div", { class: "name" }, `${b.device} · ${b.district}`),
    el("span", { class: "big" }, `${Math.round(b.fill)}%`), `${t.full}; ${t.due}`));
  document.getElementById("bins").replaceChildren(...(binCards.length ? binCards : [el("li", { class: "ok" }, t.none)]));
}

// No tile server is reachable offline (docs/dashboards.md), so the map is drawn here: the outlines
// of the cities with stations (outlines.geojson: OpenStreetMap, ODbL, simplified; no openly
// licensed kecamatan boundaries were found), stations at their coordinates on an equal-scale grid
// (a km east is as long as a km north), district names at the middle of their stations, a
// scale bar and north. 6371 km: mean Earth radius; equirectangular is exact enough for a city.
const KM_PER_DEG = Math.PI * 6371 / 180;

function niceStep(x) {  // 1, 2 or 5 x 10^n not above x
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  return [5, 2, 1].map(m => m * p).find(v => v <= x) || p;
}

function drawMap(online, stationIdx) {
  const svg = document.getElementById("map");
  const pts = state.stations.filter(s => s.kind === "air" && s.lat !== null && s.lon !== null);
  svg.replaceChildren();
  if (!pts.length) { svg.style.display = "none"; return; }
  const W = 400, H = 260, pad = 28;
  // outer rings of the outlines whose box holds a station; they widen the view to the whole city
  const rings = [];
  for (const f of state.outlines) {
    const g = f.geometry, polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
    for (const poly of polys) {
      const r = poly[0], xs = r.map(c => c[0]), ys = r.map(c => c[1]);
      const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
      if (pts.some(p => p.lon >= x0 && p.lon <= x1 && p.lat >= y0 && p.lat <= y1)) rings.push([f.properties, r]);
    }
  }
  const lats = pts.map(p => p.lat).concat(...rings.map(([, r]) => r.map(c => c[1])));
  const lons = pts.map(p => p.lon).concat(...rings.map(([, r]) => r.map(c => c[0])));
  const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const coslat = Math.cos((la0 + la1) / 2 * Math.PI / 180);
  const spanX = Math.max((lo1 - lo0) * coslat, 0.01), spanY = Math.max(la1 - la0, 0.01);  // >= ~1 km
  const k = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);  // px per degree of latitude
  const cx = (lo0 + lo1) / 2, cy = (la0 + la1) / 2;
  const sx = lo => W / 2 + (lo - cx) * coslat * k;
  const sy = la => H / 2 - (la - cy) * k;
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [a, v] of Object.entries(attrs)) e.setAttribute(a, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  svg.dataset.pxPerKm = String(k / KM_PER_DEG);
  for (const [props, r] of rings) {  // under everything else
    const d = r.map((c, i) => `${i ? "L" : "M"}${sx(c[0]).toFixed(1)},${sy(c[1]).toFixed(1)}`).join("") + "Z";
    add("path", { d, class: "outline", "data-city": props.city }).append(
      Object.assign(document.createElementNS(ns, "title"), { textContent: props.name }));
  }
  // graticule: a few round meridians and parallels, labelled at the edge
  const step = niceStep(Math.max((W / coslat / k), H / k) / 4);
  const dec = Math.max(0, -Math.floor(Math.log10(step)));
  for (let lo = Math.ceil((cx - W / 2 / coslat / k) / step) * step; sx(lo) < W; lo += step) {
    add("line", { x1: sx(lo), y1: 0, x2: sx(lo), y2: H, class: "grid" });
    if (sx(lo) < W - 40) add("text", { x: sx(lo) + 2, y: H - 3, class: "grid" }, `${lo.toFixed(dec)}°E`);
  }
  for (let la = Math.ceil((cy - H / 2 / k) / step) * step; sy(la) > 0; la += step) {
    add("line", { x1: 0, y1: sy(la), x2: W, y2: sy(la), class: "grid" });
    add("text", { x: 2, y: sy(la) - 2, class: "grid" }, `${Math.abs(la).toFixed(dec)}°${la < 0 ? "S" : "N"}`);
  }
  const idx = new Map(stationIdx.map(r => [r.device, r]));
  for (const p of pts) {
    const r = idx.get(p.device);
    const live = p.online === 1;
    const c = add("circle", { cx: sx(p.lon), cy: sy(p.lat), r: r ? 9 : 4, "data-device": p.device,
                              fill: r && live ? band(state.legend, r.value).color : "#bbb",
                              stroke: "#333", "stroke-width": live ? 1 : 0.5 });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${p.device} ${p.district}` + (r ? ` ISPU ${Math.round(r.value)}` : "");
    c.append(title);
    if (r && live) add("text", { x: sx(p.lon), y: sy(p.lat) + 3, class: "val",
                                 fill: textOn(band(state.legend, r.value).color) }, Math.round(r.value));
  }
  // one label per district, at the middle of its stations, nudged until it overlaps no other label
  const byDistrict = new Map();
  for (const p of pts) (byDistrict.get(p.district) || byDistrict.set(p.district, []).get(p.district)).push(p);
  // boxes by centre (x, y) and size (w, h); the stations are obstacles too
  const placed = pts.map(p => ({ x: sx(p.lon), y: sy(p.lat), w: 20, h: 20 }));
  const free = (x, y, w, h) => placed.every(b => Math.abs(b.x - x) * 2 > b.w + w || Math.abs(b.y - y) * 2 > b.h + h);
  for (const [d, ps] of [...byDistrict.entries()].sort()) {
    const x0 = ps.reduce((a, p) => a + sx(p.lon), 0) / ps.length, y0 = ps.reduce((a, p) => a + sy(p.lat), 0) / ps.length;
    const label = add("text", { x: x0, y: y0, class: "district", "text-anchor": "middle" }, d);
    const w = label.getBBox().width + 6, h = 12;  // the rendered width, halo included
    const x = Math.min(Math.max(x0, w / 2 + 2), W - w / 2 - 2);
    const tries = [];  // above/below first, then left/right of the stations' middle
    for (const dy of [-14, 16, -26, 28, -38, 40]) tries.push([x, y0 + dy]);
    for (const dx of [-1, 1]) for (const dy of [4, -8, 16]) tries.push([x + dx * (w / 2 + 12), y0 + dy]);
    const [lx, ly] = tries.find(([tx, ty]) => free(tx, ty - 3, w, h)) ?? tries[0];
    placed.push({ x: lx, y: ly - 3, w, h });
    label.setAttribute("x", lx); label.setAttribute("y", ly); label.setAttribute("data-w", w.toFixed(1));
  }
  // scale bar (bottom right) and north (top right)
  const km = niceStep((W / 4) / (k / KM_PER_DEG));
  const len = km * k / KM_PER_DEG, x0 = W - pad - len, yb = H - 14;
  add("path", { d: `M${x0},${yb - 4}V${yb}H${x0 + len}V${yb - 4}`, class: "scale", id: "scalebar",
                "data-km": km, "data-px": len.toFixed(2) });
  add("text", { x: x0 + len / 2, y: yb - 6, class: "scale", "text-anchor": "middle" }, `${km} km`);
  add("path", { d: `M${W - 16},8L${W - 11},22L${W - 16},19L${W - 21},22Z`, class: "north" });
  add("text", { x: W - 16, y: 33, class: "scale", "text-anchor": "middle" }, "N");
  if (rings.length) add("text", { x: 4, y: H - 14, class: "attribution" }, rings[0][0].attribution);
}

document.getElementById("lang").addEventListener("click", () => { lang = lang === "id" ? "en" : "id"; render(); });
load().then(() => document.body.dataset.ready = "1").catch(e => {
  document.getElementById("districts").replaceChildren(el("li", {}, String(e)));
  document.body.dataset.ready = "error";
});
