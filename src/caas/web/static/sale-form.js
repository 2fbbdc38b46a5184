// The new-sale form: shows the chosen model's options and keeps a live quote beside the form.
(function () {
  "use strict";
  var form = document.getElementById("sale-form");
  var panel = document.getElementById("quote");
  if (!form || !panel) return;
  var body = panel.querySelector("[data-quote-body]");
  var latest = 0;
  var timer = null;

  // With JavaScript the quote is live: the "show the quote" button is only for browsers without.
  form.querySelectorAll("[data-noscript-only]").forEach(function (el) { el.hidden = true; });

  function value(name) {
    var field = form.elements[name];
    return field ? field.value : "";
  }

  function showOptions() {
    var platform = value("plan.platform");
    form.querySelectorAll(".option-group").forEach(function (group) {
      var visible = group.dataset.platform === platform;
      group.hidden = !visible;
      if (!visible) {
        group.querySelectorAll("input[type=checkbox]").forEach(function (box) { box.checked = false; });
      }
    });
  }

  function plan() {
    var platform = value("plan.platform");
    var features = [];
    form.querySelectorAll('input[name="plan.features.' + platform + '"]:checked').forEach(function (box) {
      features.push(box.value);
    });
    return {
      platform: platform,
      features: features,
      service_period_months: parseInt(value("plan.service_period_months"), 10) || 0,
      maintenance_included: form.elements["plan.maintenance_included"].checked
    };
  }

  function cell(tag, text, className) {
    var el = document.createElement(tag);
    el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  function row(label, amount, className) {
    var tr = document.createElement("tr");
    if (className) tr.className = className;
    tr.appendChild(cell("td", label));
    tr.appendChild(cell("td", amount, "num"));
    return tr;
  }

  function message(text) {
    body.replaceChildren(cell("p", text, "muted"));
  }

  function showQuote(quote) {
    var table = document.createElement("table");
    var tbody = document.createElement("tbody");
    quote.lines.forEach(function (line) { tbody.appendChild(row(line.description, line.net.formatted)); });
    var tfoot = document.createElement("tfoot");
    tfoot.appendChild(row(panel.dataset.textNet, quote.net.formatted));
    tfoot.appendChild(row(panel.dataset.textVat.replace("{rate}", quote.vat_rate_percent), quote.vat.formatted));
    tfoot.appendChild(row(panel.dataset.textTotal, quote.total.formatted, "total-row"));
    tfoot.appendChild(row(panel.dataset.textDeposit, quote.deposit.formatted));
    table.appendChild(tbody);
    table.appendChild(tfoot);
    var wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.appendChild(table);
    body.replaceChildren(wrap);
  }

  function refresh() {
    var country = value("customer.country");
    var chosen = plan();
    if (!country || !chosen.platform) {
      message(panel.dataset.textPick);
      return;
    }
    var ticket = ++latest;
    panel.setAttribute("aria-busy", "true");
    fetch(form.dataset.quoteUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Language": document.documentElement.lang || "en"
      },
      body: JSON.stringify({ country: country, plan: chosen })
    })
      .then(function (response) {
        return response.json().then(function (data) { return { ok: response.ok, data: data }; });
      })
      .then(function (answer) {
        if (ticket !== latest) return; // an older answer arriving late
        if (answer.ok) showQuote(answer.data);
        else message(panel.dataset.textFailed.replace("{message}", answer.data.message || ""));
      })
      .catch(function () {
        if (ticket === latest) message(panel.dataset.textFailed.replace("{message}", "network"));
      })
      .finally(function () {
        if (ticket === latest) panel.removeAttribute("aria-busy");
      });
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }

  form.addEventListener("change", function (event) {
    if (event.target.name === "plan.platform") showOptions();
    soon();
  });
  form.elements["plan.service_period_months"].addEventListener("input", soon);

  // One click closes one sale: a second click while the first is on its way does nothing.
  form.addEventListener("submit", function () {
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      setTimeout(function () { button.disabled = true; }, 0);
    });
  });

  showOptions();
  refresh();
})();
