// Live pages of the portal. The order page (#live) and the car page (#car-live) follow their
// status as the server pushes it (server-sent events from the status URL's `/events`
// sibling); where the browser has no EventSource or the stream is refused, they ask the status
// URL every few seconds instead. When the order or the car has moved on, the page reloads; on
// the order page, while the customer is typing a card, it says so and waits.
(function () {
  "use strict";
  var EVERY_MS = 4000;

  // Calls `changed(status)` whenever the status differs from the first one seen; with
  // `fromFirst`, for the first one too (the order moved on between the page and the stream:
  // the callback compares with what the page shows).
  function follow(statusUrl, changed, fromFirst) {
    var known = null;
    var timer = null;

    function seen(status) {
      var text = JSON.stringify(status);
      if (known === null) { known = text; if (fromFirst) changed(status); }
      else if (text !== known) { known = text; changed(status); }
      return status;
    }

    function check() {
      if (document.hidden) return schedule();
      fetch(statusUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.json() : null;
        })
        .then(function (status) {
          if (!status) return schedule();
          seen(status);
          if (!status.final) schedule();
        })
        .catch(schedule);
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(check, EVERY_MS);
    }

    function poll() {
      document.addEventListener("visibilitychange", function () { if (!document.hidden) check(); });
      check();
    }

    if (!window.EventSource) return poll();
    var source = new EventSource(statusUrl.replace(/\/(status|live)$/, "/events"));
    source.addEventListener("status", function (event) { seen(JSON.parse(event.data)); });
    source.addEventListener("end", function () { source.close(); });
    source.onerror = function () {
      // CONNECTING: the browser tries again by itself; CLOSED: refused, so ask instead.
      if (source.readyState === EventSource.CLOSED) poll();
    };
  }

  var order = document.getElementById("live");
  if (order && order.dataset.statusUrl) {
    var known = order.dataset.state;
    var paying = order.dataset.paying === "true";
    var busyTyping = function () {
      var form = document.getElementById("pay-form");
      if (!form) return false;
      if (form.dataset.submitting) return true;
      var typed = false;
      form.querySelectorAll("[data-card]").forEach(function (input) { if (input.value) typed = true; });
      return typed;
    };
    follow(order.dataset.statusUrl, function (status) {
      if (status.state === known && status.payment_in_progress === paying) return;
      if (busyTyping()) order.querySelector("[data-live-changed]").hidden = false;
      else window.location.reload();
    }, true);
  }

  var car = document.getElementById("car-live");
  if (car && car.dataset.statusUrl) {
    follow(car.dataset.statusUrl, function () { window.location.reload(); });
  }
})();
