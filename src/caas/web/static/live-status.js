// The order page's live status: asks for the order's state every few seconds and, when it has
// moved on (or a payment the bank was confirming is settled), reloads the page; while the
// customer is typing a card it says so and waits.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.statusUrl) return;
  var EVERY_MS = 4000;
  var known = live.dataset.state;
  var paying = live.dataset.paying === "true";
  var timer = null;

  function busyTyping() {
    var form = document.getElementById("pay-form");
    if (!form) return false;
    if (form.dataset.submitting) return true;
    var typed = false;
    form.querySelectorAll("[data-card]").forEach(function (input) { if (input.value) typed = true; });
    return typed;
  }

  function check() {
    if (document.hidden) return schedule();
    fetch(live.dataset.statusUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (status) {
        if (!status) return schedule();
        if (status.state !== known || status.payment_in_progress !== paying) {
          if (busyTyping()) {
            live.querySelector("[data-live-changed]").hidden = false;
          } else {
            window.location.reload();
            return;
          }
        }
        if (!status.final) schedule();
      })
      .catch(schedule);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(check, EVERY_MS);
  }

  document.addEventListener("visibilitychange", function () { if (!document.hidden) check(); });
  schedule();
})();
