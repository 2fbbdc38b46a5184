// The store's pages: the cart shows only the fields the chosen offer takes (dates for own
// dates, a cap for pay per use), and the purchase's page follows the purchase live (paid, on
// its way, waiting for the car to be parked, active; or refunded) as the server pushes it
// (or by asking a small JSON endpoint), redrawing itself in place without a reload.
(function () {
  "use strict";

  // --- the cart -------------------------------------------------------------------------
  var cart = document.getElementById("cart-form");
  if (cart) {
    var counter = cart.querySelector("[data-cart-count]");

    var redraw = function () {
      var chosen = 0;
      cart.querySelectorAll("[data-offers]").forEach(function (group) {
        var picked = group.querySelector("input[type=radio]:checked");
        var kind = picked && picked.value ? picked.dataset.kind : "";
        if (kind) chosen += 1;
        group.querySelectorAll("[data-for]").forEach(function (field) {
          var wanted = kind && field.dataset.for.split(" ").indexOf(kind) >= 0;
          // An error stays visible even when its offer is no longer chosen.
          field.hidden = !wanted && !field.classList.contains("has-error");
        });
      });
      if (counter && chosen > 0) {
        counter.textContent = counter.dataset.text.replace("{count}", String(chosen));
      }
    };
    cart.addEventListener("change", redraw);
    redraw();
  }

  // --- a free purchase: one click is one purchase ------------------------------------------
  document.querySelectorAll("button[data-once]").forEach(function (button) {
    button.form.addEventListener("submit", function (event) {
      if (button.form.dataset.submitting) { event.preventDefault(); return; }
      button.form.dataset.submitting = "1";
      button.disabled = true;
    });
  });

  // --- the purchase, live ------------------------------------------------------------------
  var live = document.getElementById("purchase-live");
  if (!live || !live.dataset.statusUrl) return;
  var EVERY_MS = 1000;
  var timer = null;

  function show(status) {
    live.dataset.phase = status.phase;
    var text = live.querySelector("[data-status-text] strong");
    if (text.textContent !== status.status) text.textContent = status.status;
    status.steps.forEach(function (step) {
      var item = live.querySelector('[data-step="' + step.key + '"]');
      if (!item) return;
      item.className = step.status;
      if (step.status === "current") item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    });
    var failed = status.phase === "failed" || status.phase === "refunded";
    live.querySelector("[data-steps-wrap]").hidden = failed;
    var note = live.querySelector("[data-failed]");
    note.hidden = !failed;
    if (status.note) note.textContent = status.note;
    live.querySelector("[data-watching]").hidden = status.final;
    status.lines.forEach(function (line) {
      var badge = document.querySelector('[data-line="' + line.code + '"] [data-line-state]');
      if (!badge) return;
      badge.textContent = line.state;
      var state = line.entitlement_state;
      badge.className = "badge badge-" + (state === "active" ? "ok" : state === "revoked" || state === "ended" ? "muted" : "info");
    });
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
        show(status);
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
    schedule();
  }

  // Pushed by the server as it happens (server-sent events); asked for where that cannot be.
  if (!window.EventSource) return poll();
  var source = new EventSource(live.dataset.statusUrl.replace(/\/status$/, "/events"));
  source.addEventListener("status", function (event) { show(JSON.parse(event.data)); });
  source.addEventListener("end", function () { source.close(); });
  source.onerror = function () { if (source.readyState === EventSource.CLOSED) poll(); };
})();
