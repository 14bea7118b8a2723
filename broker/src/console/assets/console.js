// fedbroker console: the decisions page's live tail (server-sent events). Everything
// else works without JavaScript. Rows are built with textContent only: nothing an
// audit record holds is ever parsed as HTML.
"use strict";
(function () {
  const table = document.getElementById("decisions");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const MAX_ROWS = 500;
  const url = table.dataset.stream + window.location.search;
  const source = new EventSource(url);
  const cell = (row, text) => {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    row.appendChild(td);
  };
  source.addEventListener("open", () => {
    status.textContent = "Live: new decisions appear at the top.";
  });
  source.addEventListener("decision", (event) => {
    let d;
    try { d = JSON.parse(event.data); } catch (_) { return; }
    const row = document.createElement("tr");
    row.className = (d.outcome === "allow" || d.outcome === "deny" ? d.outcome + " " : "") + "fresh";
    cell(row, d.time);
    cell(row, d.outcome);
    cell(row, d.rule);
    cell(row, d.issuer);
    cell(row, d.subject);
    cell(row, d.target);
    const reason = [d.error, d.reason].filter((x) => x != null && x !== "").join(": ");
    cell(row, reason);
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    status.textContent = "Live: 1 new decision (" + (d.outcome || "?") + ").";
  });
  source.addEventListener("lagged", (event) => {
    status.textContent = "Live: " + event.data + " decisions went by too fast to show.";
  });
  source.addEventListener("error", () => {
    status.textContent = "The live tail is interrupted; reconnecting (log in again if your session ended).";
  });
})();
