"""The dashboard's stylesheet and its one script, served from here (no CDN, no build step).

Kept as Python strings so they ship inside the package with no package-data rules.
The script polls ``/api/changes`` (a cheap stamp of the store) and, when it moved or every
ten seconds (ages tick on), fetches the same page as an HTML fragment (``X-Partial: 1``)
and swaps it in; it leaves the page alone while someone types in a form.
"""

from __future__ import annotations

CSS = """
:root { --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --muted:#6e7781; --line:#d0d7de;
  --bg:#f6f8fa; --fg:#1f2328; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color:var(--fg); background:#fff; }
header { display:flex; gap:18px; align-items:center; padding:8px 18px; background:#24292f;
  color:#fff; flex-wrap:wrap; }
header a { color:#fff; text-decoration:none; opacity:.85; }
header a:hover, header a.here { opacity:1; text-decoration:underline; }
header .brand { font-weight:700; opacity:1; }
header .right { margin-left:auto; display:flex; gap:12px; align-items:center; }
#live-status { font-size:12px; opacity:.8; }
#live-status.bad { color:#ffb3b3; opacity:1; }
main { padding:14px 18px 40px; max-width:1400px; }
h1 { font-size:20px; margin:6px 0 12px; } h2 { font-size:16px; margin:22px 0 8px; }
table { border-collapse:collapse; margin:6px 0 12px; min-width:40%; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px 4px 0; text-align:left;
  vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; }
td.num, th.num { text-align:right; }
a { color:var(--accent); }
.badge { display:inline-block; padding:0 7px; border-radius:10px; font-size:12px;
  font-weight:600; border:1px solid currentColor; }
.ok { color:var(--ok); } .bad { color:var(--bad); } .warn { color:var(--warn); }
.muted, .idle { color:var(--muted); }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin:8px 0 16px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:130px;
  background:var(--bg); }
.card b { display:block; font-size:22px; }
.notice { border:1px solid var(--line); border-left:4px solid var(--accent); padding:8px 12px;
  margin:10px 0; background:var(--bg); }
.notice.bad { border-left-color:var(--bad); color:var(--fg); }
.notice.ok { border-left-color:var(--ok); color:var(--fg); }
.sev-critical, .sev-error { border-left:4px solid var(--bad); }
.sev-warning { border-left:4px solid var(--warn); }
.sev-info { border-left:4px solid var(--accent); } .sev-debug { border-left:4px solid #ccc; }
ol.timeline { list-style:none; padding:0; margin:0; }
ol.timeline li { padding:6px 10px; margin:4px 0; background:var(--bg); }
ol.timeline .when { color:var(--muted); font-size:12px; margin-right:8px; }
ol.timeline .type { font-family:ui-monospace, monospace; font-size:12px; margin-right:8px; }
li.alert-firing { background:#fff1f0; }
form.inline { display:inline; margin:0 4px 0 0; }
button { font:inherit; padding:2px 10px; border-radius:6px; border:1px solid var(--line);
  background:#fff; cursor:pointer; }
button.primary { background:var(--ok); color:#fff; border-color:var(--ok); }
button.danger { color:var(--bad); }
button:disabled { opacity:.5; cursor:not-allowed; }
input[type=text], input[type=password] { font:inherit; padding:2px 6px; }
.graph-wrap { overflow-x:auto; border:1px solid var(--line); border-radius:8px; padding:6px; }
svg.graph .pipeline rect { fill:#fff; stroke:var(--muted); stroke-width:1.5; }
svg.graph .p-ok rect { stroke:var(--ok); fill:#f0fff4; }
svg.graph .p-bad rect { stroke:var(--bad); fill:#fff1f0; }
svg.graph .p-warn rect { stroke:var(--warn); fill:#fff8c5; }
svg.graph .p-name { font-weight:700; font-size:14px; }
svg.graph .p-sub, svg.graph .p-state { font-size:12px; fill:#57606a; }
svg.graph .edge path { fill:none; stroke:#57606a; stroke-width:1.5; }
svg.graph .edge text { font-size:11px; fill:#24292f; paint-order:stroke; stroke:#fff;
  stroke-width:3px; }
svg.graph .edge .edge-live { fill:#0550ae; }
svg.graph .kind-model path { stroke:#8250df; stroke-width:2.2; }
svg.graph .kind-trigger path { stroke:var(--bad); stroke-dasharray:6 4; }
svg.graph .kind-health path, svg.graph .kind-stats path { stroke-dasharray:2 3; }
svg.graph marker path { fill:#57606a; }
.charts { display:flex; flex-wrap:wrap; gap:16px; }
figure.chart { margin:0; border:1px solid var(--line); border-radius:8px; padding:6px; }
figure.chart figcaption { font-weight:600; font-size:13px; }
figure.chart .axis { stroke:#8c959f; } figure.chart .tick { font-size:10px; fill:#57606a; }
figure.chart .threshold { stroke:var(--bad); stroke-dasharray:5 4; }
figure.chart polyline { fill:none; stroke-width:1.8; }
figure.chart .legend { font-size:11px; }
.s0 { stroke:#0969da; fill:#0969da; } .s1 { stroke:#bf3989; fill:#bf3989; }
.s2 { stroke:#1a7f37; fill:#1a7f37; } .s3 { stroke:#9a6700; fill:#9a6700; }
.s4 { stroke:#8250df; fill:#8250df; } .s5 { stroke:#cf222e; fill:#cf222e; }
figure.chart polyline { fill:none !important; }
figure.chart text.legend { stroke:none; }
code { font-family:ui-monospace, monospace; font-size:12px; }
"""

JS = """
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("live-status");
  var every = parseInt(document.body.getAttribute("data-poll-ms") || "2000", 10);
  var stamp = null, rendered = Date.now(), busy = false;
  function typing() {
    var a = document.activeElement;
    return !!(a && a.closest && a.closest("form") &&
      (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT"));
  }
  function show(text, ok) {
    if (!status) { return; }
    status.textContent = text;
    status.className = ok ? "" : "bad";
  }
  async function tick() {
    if (busy || !main) { return; }
    busy = true;
    try {
      var r = await fetch("/api/changes", { cache: "no-store" });
      var j = await r.json();
      var moved = stamp !== null && j.stamp !== stamp;
      stamp = j.stamp;
      if ((moved || Date.now() - rendered > 10000) && !typing()) {
        var page = await fetch(location.href, { cache: "no-store",
          headers: { "X-Partial": "1" } });
        if (page.ok) {
          main.innerHTML = await page.text();
          rendered = Date.now();
        }
      }
      show(j.error ? j.error : "live, checked " + new Date().toLocaleTimeString(), !j.error);
    } catch (e) {
      show("dashboard unreachable; retrying", false);
    } finally {
      busy = false;
    }
  }
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { e.preventDefault(); }
  });
  if (main) { setInterval(tick, every); tick(); }
})();
"""
