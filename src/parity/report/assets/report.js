// parity HTML report: sortable stage table, filter, heat-map read-out. No network, no libraries.
(function () {
  "use strict";
  function cellValue(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.getAttribute("data-type") === "num";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = cellValue(a, col, numeric), y = cellValue(b, col, numeric);
      if (numeric) {  // NaN (no value) always last, whatever the direction
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return asc ? x - y : y - x;
      }
      return asc ? (x < y ? -1 : x > y ? 1 : 0) : (x < y ? 1 : x > y ? -1 : 0);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortTable(table, col, th); });
    });
  });
  var filter = document.getElementById("stage-filter"), only = document.getElementById("only-divergent");
  function applyFilter() {
    var text = filter ? filter.value.toLowerCase() : "";
    document.querySelectorAll("table.stages tbody tr").forEach(function (row) {
      var key = row.getAttribute("data-key").toLowerCase();
      var bad = row.getAttribute("data-status") !== "pass";
      row.hidden = (text && key.indexOf(text) < 0) || (only && only.checked && !bad);
    });
  }
  if (filter) { filter.addEventListener("input", applyFilter); }
  if (only) { only.addEventListener("change", applyFilter); }
  document.querySelectorAll("svg.heatmap").forEach(function (svg) {
    var grid = JSON.parse(svg.getAttribute("data-grid"));
    var rowStep = +svg.getAttribute("data-row-step"), colStep = +svg.getAttribute("data-col-step");
    var rows = +svg.getAttribute("data-rows"), cols = +svg.getAttribute("data-cols");
    var img = svg.querySelector("image"), out = document.getElementById(svg.getAttribute("data-readout"));
    svg.addEventListener("mousemove", function (ev) {
      var box = img.getBoundingClientRect();
      var c = Math.floor((ev.clientX - box.left) / box.width * grid[0].length);
      var r = Math.floor((ev.clientY - box.top) / box.height * grid.length);
      if (r < 0 || c < 0 || r >= grid.length || c >= grid[0].length) { out.textContent = ""; return; }
      var r0 = r * rowStep, c0 = c * colStep;
      var r1 = Math.min(rows, r0 + rowStep) - 1, c1 = Math.min(cols, c0 + colStep) - 1;
      var v = grid[r][c];
      out.textContent = "rows " + r0 + (r1 > r0 ? "–" + r1 : "") + ", columns " + c0 + (c1 > c0 ? "–" + c1 : "") +
        ": max |error| " + (v === null ? "0" : typeof v === "string" ? v : v.toPrecision(4));
    });
    svg.addEventListener("mouseleave", function () { out.textContent = ""; });
  });
})();
