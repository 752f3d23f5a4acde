// OmniQ dashboard: live updates. The server streams stored events (server-sent
// events); on each one the page's <main id="live"> is fetched again and swapped in.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  var state = document.getElementById("live-state");
  if (!page || !body.dataset.stream) return;

  var timer = null;
  function refresh() {
    if (timer) return;
    timer = setTimeout(function () {
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          var main = document.getElementById("live");
          if (!fresh || !main) return;
          // keep the tasks ticked for a bulk action across the refresh
          var ticked = Array.prototype.map.call(
            main.querySelectorAll('input[name="ids"]:checked'), function (b) { return b.value; });
          main.replaceWith(fresh);
          fresh.querySelectorAll('input[name="ids"]').forEach(function (b) {
            if (ticked.indexOf(b.value) >= 0) b.checked = true;
          });
        })
        .catch(function () {})
        .finally(function () { timer = null; });
    }, 500);
  }

  if (page === "overview") setInterval(refresh, 10000); // worker heartbeats have no events
  if (!window.EventSource) return;
  var params = new URLSearchParams({ since: body.dataset.since });
  if (page === "task") params.set("task_id", body.dataset.task);
  var source = new EventSource(body.dataset.stream + "?" + params.toString());
  source.addEventListener("omniq", refresh);
  source.onopen = function () { if (state) state.textContent = "live"; };
  source.onerror = function () { if (state) state.textContent = "reconnecting…"; };
})();
