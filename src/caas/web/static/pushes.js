// The configuration pushes pages (#pushes-live): each push's counts follow the server-sent
// events of the status URL's `/events` sibling, cell by cell ([data-push] [data-count]); a
// push not on the page yet (a new one) reloads the list. Without EventSource, or when the
// stream is refused, the page asks the status URL every few seconds instead.
(function () {
  "use strict";
  var EVERY_MS = 5000;
  var root = document.getElementById("pushes-live");
  if (!root || !root.dataset.statusUrl) return;
  var statusUrl = root.dataset.statusUrl;

  function show(status) {
    (status.pushes || []).forEach(function (push) {
      var row = root.querySelector('[data-push="' + push.id + '"]');
      if (!row) { window.location.reload(); return; }
      row.querySelectorAll("[data-count]").forEach(function (cell) {
        var value = push[cell.dataset.count];
        if (value !== undefined && cell.textContent !== String(value)) cell.textContent = value;
      });
      var done = row.querySelector("[data-done] .badge");
      if (done && push.done && !done.classList.contains("badge-ok")) window.location.reload();
    });
  }

  function poll() {
    setInterval(function () {
      if (document.hidden) return;
      fetch(statusUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (status) { if (status) show(status); })
        .catch(function () {});
    }, EVERY_MS);
  }

  if (!window.EventSource) return poll();
  var source = new EventSource(statusUrl.replace(/\/live$/, "/events"));
  source.addEventListener("status", function (event) { show(JSON.parse(event.data)); });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) poll();
  };
})();
