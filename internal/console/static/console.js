// jetagent console: the few things that need a script. Every page works
// without it; this adds live updates (Server-Sent Events) and a "select
// all" box. Text from the server is inserted as text, never as HTML.
(function () {
  "use strict";

  function eventItem(e) {
    var li = document.createElement("li");
    li.className = "new";
    var t = document.createElement("time");
    t.textContent = (e.at || "").replace("T", " ").replace(/\..*$/, "").replace("Z", "");
    li.appendChild(t);
    var b = document.createElement("b");
    b.textContent = e.kind;
    li.appendChild(b);
    li.appendChild(document.createTextNode(" "));
    if (e.link && e.link.charAt(0) === "/") {
      var a = document.createElement("a");
      a.href = e.link;
      a.textContent = e.text;
      li.appendChild(a);
    } else {
      li.appendChild(document.createTextNode(e.text));
    }
    return li;
  }

  function live() {
    var list = document.getElementById("events");
    if (!list || !window.EventSource) return;
    var state = document.getElementById("live-state");
    var src = new EventSource("/events");
    src.onopen = function () { if (state) state.textContent = "Connected: new events appear at the top."; };
    src.onerror = function () { if (state) state.textContent = "Disconnected; reconnecting…"; };
    ["dead_letter", "replay", "breaker", "audit"].forEach(function (kind) {
      src.addEventListener(kind, function (m) {
        list.insertBefore(eventItem(JSON.parse(m.data)), list.firstChild);
        while (list.children.length > 500) list.removeChild(list.lastChild);
      });
    });
  }

  function job() {
    var el = document.getElementById("job");
    if (!el || el.getAttribute("data-running") !== "true" || !window.EventSource) return;
    var src = new EventSource("/events?job=" + encodeURIComponent(el.getAttribute("data-job")));
    src.addEventListener("job", function (m) {
      var e = JSON.parse(m.data);
      var summary = document.getElementById("summary");
      if (summary) summary.textContent = e.text;
      var bar = document.getElementById("bar");
      if (bar && e.percent) bar.value = e.percent;
      if (e.done) { src.close(); window.location.reload(); }
    });
  }

  function selectAll() {
    var all = document.getElementById("all");
    if (!all) return;
    all.addEventListener("change", function () {
      document.querySelectorAll("table.dlq input[name=id]").forEach(function (c) { c.checked = all.checked; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { live(); job(); selectAll(); });
})();
