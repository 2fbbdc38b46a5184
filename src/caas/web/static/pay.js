// Paying by card: the card goes straight from the browser to the payment provider, which
// answers with a token; only the token is posted to the platform. The card fields have no
// name, so the browser itself never sends them here.
(function () {
  "use strict";
  var form = document.getElementById("pay-form");
  if (!form) return;
  var errorBox = document.querySelector("[data-card-error]");
  var button = form.querySelector("button[type=submit]");
  var label = button.textContent;

  function card(name) { return form.querySelector('[data-card="' + name + '"]').value.trim(); }

  function fail(message) {
    errorBox.textContent = form.dataset.cardErrorText.replace("{message}", message);
    errorBox.hidden = false;
    button.disabled = false;
    button.textContent = label;
    delete form.dataset.submitting;
  }

  function expiry() {
    var match = /^(\d{1,2})\s*\/\s*(\d{2}|\d{4})$/.exec(card("expiry"));
    if (!match) return null;
    var year = parseInt(match[2], 10);
    return { month: parseInt(match[1], 10), year: year < 100 ? 2000 + year : year };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (form.dataset.submitting) return;
    var exp = expiry();
    if (!exp) { fail("MM/YY"); return; }
    form.dataset.submitting = "1";
    errorBox.hidden = true;
    button.disabled = true;
    button.textContent = button.dataset.working;
    fetch(form.dataset.tokensUrl, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({
        number: card("number").replace(/[\s-]/g, ""),
        exp_month: exp.month,
        exp_year: exp.year,
        cvc: card("cvc")
      })
    })
      .then(function (response) {
        return response.json().then(function (data) { return { ok: response.ok, data: data }; });
      })
      .then(function (answer) {
        if (!answer.ok || !answer.data.id) {
          fail(answer.data.message || answer.data.detail || "invalid card");
          return;
        }
        form.elements["card_token"].value = answer.data.id;
        // Forget the card before the page goes: only the token leaves for the platform.
        form.querySelectorAll("[data-card]").forEach(function (input) { input.value = ""; });
        form.submit();
      })
      .catch(function () { fail("the payment provider cannot be reached"); });
  });
})();
