(function () {
'use strict';
var D = JSON.parse(document.getElementById('plait-data').textContent);
var NODES = D.nodes, I = D.items, K = I.t0.length;
var PALETTE = ['#4f6bff', '#8b5cf6', '#0ea5b7', '#f97316', '#db2777', '#0d9488', '#6366f1', '#65a30d'];
var STATUS = ['success', 'failed', 'retried attempt', 'interrupted'];
var chart = document.getElementById('chart'), tip = document.getElementById('tip');
var resetBtn = document.getElementById('reset'), zoomInfo = document.getElementById('zoominfo');
var total = Math.max(D.run.duration, 1);
for (var q = 0; q < NODES.length; q++) total = Math.max(total, NODES[q].e);
for (var q2 = 0; q2 < K; q2++) total = Math.max(total, I.t1[q2]);
var view = [0, total * 1.01];

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
  });
}
function fmt(ms) {
  if (ms <= 0) return '0';
  if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
  if (ms < 10) return ms.toFixed(2).replace(/\.?0+$/, '') + ' ms';
  if (ms < 1000) return ms.toFixed(ms < 100 ? 1 : 0).replace(/\.0$/, '') + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1).replace(/\.?0+$/, '') + ' s';
  var m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
  return m + 'm ' + (s < 10 ? '0' : '') + s + 's';
}
function niceStep(span, target) {
  var raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}
function color(n) { return PALETTE[n % PALETTE.length]; }

// lanes: one per concurrency slot, attempts sorted by start within each; nodes
// that ran at the same time (concurrent branches) have lanes of their own
function laneOf(k) { return (NODES[I.n[k]].l || 0) + I.s[k]; }
var lanes = 1, chipRows = 1, together = false;
for (var k = 0; k < K; k++) if (laneOf(k) + 1 > lanes) lanes = laneOf(k) + 1;
NODES.forEach(function (n) {
  if ((n.l || 0) + (n.w || 1) > lanes) lanes = (n.l || 0) + (n.w || 1);
  if ((n.r || 0) + 1 > chipRows) chipRows = (n.r || 0) + 1;
  if (n.alone === false) together = true;
});
var byLane = [];
for (var l = 0; l < lanes; l++) byLane.push([]);
for (k = 0; k < K; k++) byLane[laneOf(k)].push(k);
byLane.forEach(function (arr) { arr.sort(function (a, b) { return I.t0[a] - I.t0[b]; }); });
var peakCap = 1;
NODES.forEach(function (n) { if (n.mc > peakCap) peakCap = n.mc; });
document.querySelectorAll('.dot[data-node]').forEach(function (el) {
  var n = +el.getAttribute('data-node');
  if (n >= 0) el.style.background = color(n);
});

var attempts = null;
function attemptsOf(k) {
  if (!attempts) {
    attempts = new Map();
    for (var j = 0; j < K; j++) {
      var key = I.n[j] + ':' + I.i[j];
      var list = attempts.get(key);
      if (list) list.push(j); else attempts.set(key, [j]);
    }
  }
  return attempts.get(I.n[k] + ':' + I.i[k]) || [k];
}

var geo = null;
function render() {
  var W = Math.max(chart.clientWidth, 480);
  var L = 64, Rp = 14, top = 30 + (chipRows - 1) * 24;
  var laneH = Math.max(2, Math.min(22, Math.floor(440 / lanes)));
  var lanesH = laneH * lanes;
  var axisY = top + lanesH, flightTop = axisY + 44, flightH = 74, H = flightTop + flightH + 22;
  var span = view[1] - view[0], pw = W - L - Rp;
  var x = function (t) { return L + (t - view[0]) / span * pw; };
  geo = {L: L, pw: pw, top: top, H: H, span: span, laneH: laneH};
  var out = [];
  out.push('<svg xmlns="http://www.w3.org/2000/svg" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '">');
  out.push('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">' +
    '<rect width="6" height="6" fill="#f2a516"/><rect width="2.5" height="6" fill="#fbd88a"/></pattern>' +
    '<clipPath id="plot"><rect x="' + L + '" y="0" width="' + pw + '" height="' + H + '"/></clipPath></defs>');
  // lanes
  for (var l = 0; l < lanes; l++) {
    out.push('<rect class="lane' + (l % 2 ? ' odd' : '') + '" x="' + L + '" y="' + (top + l * laneH) + '" width="' + pw + '" height="' + laneH + '"/>');
  }
  var every = laneH >= 12 ? 1 : Math.ceil(12 / laneH);
  for (l = 0; l < lanes; l += every) {
    out.push('<text class="lanelabel" x="' + (L - 8) + '" y="' + (top + l * laneH + Math.min(laneH, 12) / 2 + 4) + '" text-anchor="end">' + (together ? 'lane ' : 'slot ') + l + '</text>');
  }
  // grid and axis
  var step = niceStep(span, Math.max(3, Math.floor(pw / 110)));
  var first = Math.ceil(view[0] / step) * step;
  out.push('<g class="axis">');
  for (var t = first; t <= view[1] + 1e-9; t += step) {
    var gx = x(t).toFixed(1);
    out.push('<line class="grid" x1="' + gx + '" x2="' + gx + '" y1="' + top + '" y2="' + (flightTop + flightH) + '"/>');
    out.push('<text x="' + gx + '" y="' + (axisY + 16) + '" text-anchor="middle">' + fmt(t) + '</text>');
  }
  out.push('<line class="grid" x1="' + L + '" x2="' + (L + pw) + '" y1="' + axisY + '" y2="' + axisY + '" style="stroke:#cfd4de"/>');
  out.push('</g><g clip-path="url(#plot)">');
  // node bands, behind the bars, with a header chip
  NODES.forEach(function (n, i) {
    var x0 = x(n.s), x1 = Math.max(x(n.e), x0 + 2), c = color(i);
    // a node alone in its time spans every lane; beside others, only its own
    var by = n.alone === false ? top + (n.l || 0) * laneH : top, bh = n.alone === false ? (n.w || 1) * laneH : lanesH;
    var cy = 4 + (n.r || 0) * 24;
    out.push('<rect class="band" data-node="' + i + '" x="' + x0.toFixed(1) + '" y="' + by + '" width="' + (x1 - x0).toFixed(1) + '" height="' + bh + '" fill="' + c + '" fill-opacity="' + (n.alone === false ? '0.12' : '0.07') + '"/>');
    out.push('<line x1="' + x0.toFixed(1) + '" x2="' + x0.toFixed(1) + '" y1="' + cy + '" y2="' + (flightTop + flightH) + '" stroke="' + c + '" stroke-opacity="0.55" stroke-width="1.5"/>');
    out.push('<g class="bandhead"><rect data-node="' + i + '" x="' + x0.toFixed(1) + '" y="' + cy + '" width="' + (x1 - x0).toFixed(1) + '" height="20" rx="4" fill="' + c + '"/>');
    var label = n.id + (n.batch ? '' : '');
    if (x1 - x0 > 26) {
      var maxChars = Math.floor((x1 - x0 - 12) / 6.4);
      if (maxChars < label.length) label = label.slice(0, Math.max(1, maxChars - 1)) + '…';
      out.push('<text x="' + (x0 + 7).toFixed(1) + '" y="' + (cy + 14) + '">' + esc(label) + '</text>');
    }
    out.push('</g>');
  });
  // bars: adjacent tiny bars of one status in a lane merge, so 100k items stay drawable
  var bars = 0, pad = laneH >= 8 ? 1.5 : laneH >= 4 ? 0.5 : 0, bh = laneH - 2 * pad;
  for (l = 0; l < lanes; l++) {
    var arr = byLane[l], y = (top + l * laneH + pad).toFixed(1), cur = null;
    var flush = function () {
      if (!cur) return;
      var w = Math.max(cur.x1 - cur.x0, 1.5);
      if (w > 4) w -= 1;  // a hairline between back-to-back items
      out.push('<rect class="bar s' + cur.st + '" data-k="' + cur.k + '"' + (cur.n > 1 ? ' data-n="' + cur.n + '"' : '') +
        ' x="' + cur.x0.toFixed(2) + '" y="' + y + '" width="' + w.toFixed(2) + '" height="' + bh.toFixed(1) + '"/>');
      if (cur.n === 1 && w > 34 && laneH >= 14) {
        var idx = I.i[cur.k], text = idx === null ? NODES[I.n[cur.k]].id : '#' + idx;
        if (I.a[cur.k] > 1) text += ' ·' + I.a[cur.k];
        if (text.length * 6 < w - 6) out.push('<text class="blabel' + (cur.st === 2 ? ' dark' : '') + '" x="' + (cur.x0 + 4).toFixed(1) + '" y="' + (top + l * laneH + laneH / 2 + 3.5).toFixed(1) + '">' + esc(text) + '</text>');
      }
      bars++;
      cur = null;
    };
    for (var j = 0; j < arr.length; j++) {
      k = arr[j];
      if (I.t1[k] < view[0] || I.t0[k] > view[1]) continue;
      var x0 = x(I.t0[k]), x1 = x(I.t1[k]), st = I.st[k];
      if (cur && cur.st === st && x1 - x0 < 2 && cur.x1 - cur.x0 < 2.5 && x0 <= cur.x1 + 0.75) {
        cur.x1 = Math.max(cur.x1, x1); cur.n++;
        continue;
      }
      flush();
      cur = {k: k, x0: x0, x1: x1, st: st, n: 1};
    }
    flush();
  }
  out.push('<g id="hl"></g></g>');
  // items in flight under the chart: saturated is flat at capacity, a stall is a dip
  var nb = Math.max(20, Math.floor(pw / 3)), bw = span / nb, acc = new Float64Array(nb + 1), diff = new Float64Array(nb + 2);
  for (k = 0; k < K; k++) {
    var a = (I.t0[k] - view[0]) / bw, b = (I.t1[k] - view[0]) / bw;
    if (b <= 0 || a >= nb) continue;
    if (a < 0) a = 0;
    if (b > nb) b = nb;
    var i0 = Math.floor(a), i1 = Math.floor(b);
    if (i0 === i1) { acc[i0] += b - a; continue; }
    acc[i0] += i0 + 1 - a; diff[i0 + 1] += 1; diff[i1] -= 1; acc[i1] += b - i1;
  }
  var run = 0, peak = 0, vals = [];
  for (var bi = 0; bi < nb; bi++) { run += diff[bi]; var v = acc[bi] + run; vals.push(v); if (v > peak) peak = v; }
  var ymax = Math.max(peakCap, Math.ceil(peak), 1);
  var fy = function (v) { return flightTop + flightH - v / ymax * flightH; };
  var path = 'M' + L + ' ' + fy(0).toFixed(1);
  for (bi = 0; bi < nb; bi++) {
    path += 'L' + (L + bi / nb * pw).toFixed(1) + ' ' + fy(vals[bi]).toFixed(1) + 'L' + (L + (bi + 1) / nb * pw).toFixed(1) + ' ' + fy(vals[bi]).toFixed(1);
  }
  path += 'L' + (L + pw) + ' ' + fy(0).toFixed(1) + 'Z';
  out.push('<g clip-path="url(#plot)"><path class="flight" d="' + path + '"/>');
  NODES.forEach(function (n) {
    if (!n.batch) return;
    out.push('<line class="cap" x1="' + x(n.s).toFixed(1) + '" x2="' + x(n.e).toFixed(1) + '" y1="' + fy(n.mc).toFixed(1) + '" y2="' + fy(n.mc).toFixed(1) + '"/>');
  });
  out.push('</g><text x="' + (L - 8) + '" y="' + (flightTop + 10) + '" text-anchor="end">' + ymax + '</text>');
  out.push('<text x="' + (L - 8) + '" y="' + (flightTop + flightH) + '" text-anchor="end">0</text>');
  out.push('<text x="' + L + '" y="' + (flightTop - 6) + '" style="font-weight:600;fill:#4f6bff">items in flight</text>');
  out.push('<line class="cap" x1="' + (L + 96) + '" x2="' + (L + 118) + '" y1="' + (flightTop - 10) + '" y2="' + (flightTop - 10) + '"/>');
  out.push('<text x="' + (L + 124) + '" y="' + (flightTop - 6) + '">capacity (max_concurrent)</text>');
  out.push('<line x1="' + L + '" x2="' + (L + pw) + '" y1="' + (flightTop + flightH) + '" y2="' + (flightTop + flightH) + '" stroke="#cfd4de"/>');
  out.push('<rect class="brush" id="brush" x="0" y="' + top + '" width="0" height="' + (flightTop + flightH - top) + '" visibility="hidden"/>');
  out.push('</svg>');
  chart.innerHTML = out.join('');
  chart.setAttribute('data-bars', bars);
  var zoomed = view[0] > 0 || view[1] < total * 1.01;
  resetBtn.hidden = !zoomed;
  zoomInfo.textContent = zoomed ? 'showing ' + fmt(view[0]) + ' – ' + fmt(view[1]) : 'drag across the chart to zoom';
}

function row(label, value) { return '<div class="row"><span>' + label + '</span><span>' + value + '</span></div>'; }
function showTip(html, ev) {
  tip.innerHTML = html;
  tip.hidden = false;
  var w = tip.offsetWidth, h = tip.offsetHeight, px = ev.clientX + 14, py = ev.clientY + 14;
  if (px + w > window.innerWidth - 8) px = ev.clientX - w - 14;
  if (py + h > window.innerHeight - 8) py = ev.clientY - h - 14;
  tip.style.left = Math.max(4, px) + 'px';
  tip.style.top = Math.max(4, py) + 'px';
}
function itemTip(k, n) {
  var node = NODES[I.n[k]], idx = I.i[k];
  var head = '<b>' + esc(node.id) + (idx === null ? '' : ' · item #' + idx) + '</b>';
  if (n > 1) {
    return head + ' <span style="opacity:.7">and ' + (n - 1) + ' more</span>' + row('status', STATUS[I.st[k]]) +
      '<div style="margin-top:4px;opacity:.75">' + n + ' short attempts drawn as one bar: drag to zoom in</div>';
  }
  var all = attemptsOf(k), html = head;
  if (I.p[k] >= 0) html += '<div><code>' + esc(D.previews[I.p[k]]) + '</code></div>';
  html += row('status', STATUS[I.st[k]]);
  html += row('attempt', I.a[k] + (all.length > 1 ? ' of ' + all.length : ''));
  html += row('slot', I.s[k]);
  html += row('started', '+' + fmt(I.t0[k]));
  html += row('duration', fmt(I.t1[k] - I.t0[k]));
  if (I.e[k] >= 0) html += '<div class="err">' + esc(D.errors[I.e[k]]) + '</div>';
  return html;
}
function highlight(k) {
  var g = document.getElementById('hl');
  if (!g) return;
  if (k === null) { g.innerHTML = ''; return; }
  var parts = [], span = geo.span;
  attemptsOf(k).forEach(function (j) {
    var x0 = geo.L + (I.t0[j] - view[0]) / span * geo.pw, x1 = geo.L + (I.t1[j] - view[0]) / span * geo.pw;
    parts.push('<rect class="hl" x="' + (x0 - 1).toFixed(1) + '" y="' + (geo.top + laneOf(j) * geo.laneH - 0.5).toFixed(1) + '" width="' + (Math.max(x1 - x0, 1.5) + 2).toFixed(1) + '" height="' + (geo.laneH + 1) + '" rx="2"/>');
  });
  g.innerHTML = parts.join('');
}

var drag = null;
chart.addEventListener('mousemove', function (ev) {
  if (drag) {
    var r = chart.getBoundingClientRect(), cx = Math.min(Math.max(ev.clientX - r.left, geo.L), geo.L + geo.pw);
    var b = document.getElementById('brush');
    b.setAttribute('x', Math.min(drag, cx)); b.setAttribute('width', Math.abs(cx - drag)); b.setAttribute('visibility', 'visible');
    return;
  }
  var el = ev.target;
  if (el.hasAttribute && el.hasAttribute('data-k')) {
    var k = +el.getAttribute('data-k'), n = +(el.getAttribute('data-n') || 1);
    showTip(itemTip(k, n), ev);
    highlight(n === 1 ? k : null);
  } else if (el.hasAttribute && el.hasAttribute('data-node')) {
    var node = NODES[+el.getAttribute('data-node')];
    showTip('<b>' + esc(node.id) + '</b> <span style="opacity:.7">' + esc(node.type) + '</span>' + row('status', node.status) +
      row('from', '+' + fmt(node.s)) + row('duration', fmt(node.e - node.s)) + (node.batch ? row('max_concurrent', node.mc) : ''), ev);
    highlight(null);
  } else { tip.hidden = true; highlight(null); }
});
chart.addEventListener('mouseleave', function () { tip.hidden = true; highlight(null); });
chart.addEventListener('mousedown', function (ev) {
  var r = chart.getBoundingClientRect(), cx = ev.clientX - r.left;
  if (cx < geo.L || cx > geo.L + geo.pw) return;
  drag = cx; tip.hidden = true; ev.preventDefault();
});
window.addEventListener('mouseup', function (ev) {
  if (drag === null) return;
  var r = chart.getBoundingClientRect(), cx = Math.min(Math.max(ev.clientX - r.left, geo.L), geo.L + geo.pw);
  var a = Math.min(drag, cx), b = Math.max(drag, cx);
  drag = null;
  if (b - a > 4) {
    var t0 = view[0] + (a - geo.L) / geo.pw * geo.span, t1 = view[0] + (b - geo.L) / geo.pw * geo.span;
    view = [t0, Math.max(t1, t0 + 0.001)];
  }
  render();
});
function zoomTo(t0, t1) {
  var m = Math.max((t1 - t0) * 0.08, 0.05);
  view = [Math.max(0, t0 - m), t1 + m];
  render();
  chart.scrollIntoView({behavior: 'smooth', block: 'center'});
}
chart.addEventListener('dblclick', function () { view = [0, total * 1.01]; render(); });
resetBtn.addEventListener('click', function () { view = [0, total * 1.01]; render(); });
document.querySelectorAll('tr[data-zoom]').forEach(function (tr) {
  tr.addEventListener('click', function () { var n = NODES[+tr.getAttribute('data-zoom')]; if (n) zoomTo(n.s, n.e); });
});
document.querySelectorAll('ul.failed li').forEach(function (li) {
  li.addEventListener('click', function () {
    var node = +li.getAttribute('data-node'), idx = li.getAttribute('data-idx');
    for (var j = 0; j < K; j++) {
      if (I.n[j] === node && String(I.i[j] === null ? '' : I.i[j]) === idx) {
        var all = attemptsOf(j), t0 = Infinity, t1 = 0;
        all.forEach(function (a) { t0 = Math.min(t0, I.t0[a]); t1 = Math.max(t1, I.t1[a]); });
        zoomTo(t0, t1);
        return;
      }
    }
  });
});
// timeline.html#fetch[7] opens zoomed on that item, with its details shown
function openHash() {
  var m = /^#(.+?)(?:\[(\d+)\])?$/.exec(decodeURIComponent(location.hash || ''));
  if (!m) return;
  var node = -1;
  NODES.forEach(function (n, i) { if (n.id === m[1]) node = i; });
  if (node < 0) return;
  var idx = m[2] === undefined ? null : +m[2], hit = -1;
  for (var j = 0; j < K; j++) if (I.n[j] === node && (idx === null || I.i[j] === idx)) { hit = j; break; }
  if (idx === null || hit < 0) { zoomTo(NODES[node].s, NODES[node].e); return; }
  var all = attemptsOf(hit), t0 = Infinity, t1 = 0;
  all.forEach(function (a) { t0 = Math.min(t0, I.t0[a]); t1 = Math.max(t1, I.t1[a]); });
  view = [Math.max(0, t0 - (t1 - t0) * 0.6), t1 + (t1 - t0) * 0.6];
  render();
  var last = all[all.length - 1], r = chart.getBoundingClientRect();
  var bx = r.left + geo.L + (I.t1[last] - view[0]) / geo.span * geo.pw;
  var by = r.top + geo.top + (laneOf(last) + 1) * geo.laneH;
  showTip(itemTip(last, 1), {clientX: bx, clientY: by});
  highlight(last);
}
window.addEventListener('hashchange', openHash);
var timer = null;
window.addEventListener('resize', function () { clearTimeout(timer); timer = setTimeout(render, 80); });
render();
openHash();
})();
