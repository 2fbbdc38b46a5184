// The phone is the key. This browser makes its own ECDSA P-256 key pair with WebCrypto; the
// private key is not extractable and stays in this browser's IndexedDB, only the public key
// (SubjectPublicKeyInfo, base64) is posted to the platform. To open the car, the page asks the
// car itself for a challenge (the simulator's local endpoint stands in for Bluetooth), signs it
// here and hands the signature to the car, which checks it against the keys in its manifest.
(function () {
  "use strict";
  var root = document.getElementById("phone-key");
  if (!root) return;
  var DB_NAME = "caas-phone-key";
  var STORE = "keys";
  var THIS_PHONE = "this-phone";
  var ALGORITHM = { name: "ECDSA", namedCurve: "P-256" };
  var SIGNING = { name: "ECDSA", hash: "SHA-256" };

  function supported() {
    return !!(window.isSecureContext && window.crypto && window.crypto.subtle && window.indexedDB);
  }

  function request(req) {
    return new Promise(function (resolve, reject) {
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function openDb() {
    var req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = function () { req.result.createObjectStore(STORE); };
    return request(req);
  }

  function load() {
    return openDb().then(function (db) {
      return request(db.transaction(STORE, "readonly").objectStore(STORE).get(THIS_PHONE));
    });
  }

  function save(record) {
    return openDb().then(function (db) {
      return request(db.transaction(STORE, "readwrite").objectStore(STORE).put(record, THIS_PHONE));
    });
  }

  function base64(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = "";
    for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return btoa(text);
  }

  // The key pair of this phone: made once, then read back from IndexedDB.
  function ensureKey() {
    return load().then(function (record) {
      if (record) return record;
      return crypto.subtle.generateKey(ALGORITHM, false, ["sign", "verify"]).then(function (pair) {
        return crypto.subtle.exportKey("spki", pair.publicKey).then(function (spki) {
          var made = { privateKey: pair.privateKey, publicKey: base64(spki), createdAt: new Date().toISOString() };
          return save(made).then(function () { return made; });
        });
      });
    });
  }

  function each(selector, action) {
    Array.prototype.forEach.call(root.querySelectorAll(selector), action);
  }

  // This phone's entry among a car's active keys, if it is one.
  function activeRow(car, publicKey) {
    var found = null;
    Array.prototype.forEach.call(car.querySelectorAll("[data-active-key]"), function (row) {
      if (row.dataset.activeKey === publicKey) found = row;
    });
    return found;
  }

  function show(record) {
    var mine = root.querySelector("[data-my-public-key]");
    if (record && mine) {
      mine.querySelector("[data-public-key-text]").value = record.publicKey;
      mine.hidden = false;
    }
    each("[data-car]", function (car) {
      var status = car.querySelector("[data-this-phone-status]");
      if (!status) return;  // not delivered yet
      var row = record ? activeRow(car, record.publicKey) : null;
      var form = car.querySelector("[data-pair-this-phone]");
      var tryKey = car.querySelector("[data-try-key]");
      if (row) {
        status.textContent = root.dataset.pairedText.replace("{label}", row.dataset.label);
        status.className = "";
        form.hidden = true;
        tryKey.hidden = false;
        tryKey.dataset.keyId = row.dataset.phone;
      } else {
        status.textContent = root.dataset.notPairedText;
      }
    });
  }

  function pairThisPhone(event) {
    event.preventDefault();
    var form = event.currentTarget;
    if (form.dataset.submitting) return;
    form.dataset.submitting = "1";
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.textContent = root.dataset.pairing;
    ensureKey().then(function (record) {
      form.elements["public_key"].value = record.publicKey;
      form.submit();
    }).catch(function () {
      delete form.dataset.submitting;
      button.disabled = false;
      form.parentNode.querySelector("[data-webcrypto-missing]").hidden = false;
    });
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) { return { ok: response.ok, data: data }; });
    });
  }

  function operate(button) {
    var car = button.closest("[data-car]");
    var panel = button.closest("[data-try-key]");
    var result = panel.querySelector("[data-operate-result]");
    var action = button.dataset.operate;
    var base = root.dataset.simUrl + "/cars/" + encodeURIComponent(car.dataset.car) + "/key/";
    result.textContent = "…";
    Promise.all([load(), post(base + "challenge")]).then(function (both) {
      var record = both[0];
      var challenge = both[1];
      if (!challenge.ok || !challenge.data.nonce) throw new Error("no challenge");
      var nonce = challenge.data.nonce;
      return crypto.subtle.sign(SIGNING, record.privateKey, new TextEncoder().encode(nonce)).then(function (signature) {
        // WebCrypto's ECDSA signature is already r || s, as the car expects.
        return post(base + "operate", {
          action: action, key_id: panel.dataset.keyId, signature: base64(signature), nonce: nonce
        });
      });
    }).then(function (answer) {
      if (answer.data && answer.data.granted) {
        result.textContent = action === "start" ? root.dataset.started : root.dataset.unlocked;
        result.className = "alert alert-ok";
      } else {
        var reason = (answer.data && (answer.data.message || answer.data.reason)) || "?";
        result.textContent = root.dataset.refused.replace("{reason}", reason);
        result.className = "alert alert-danger";
      }
    }).catch(function () {
      result.textContent = root.dataset.unreachable;
      result.className = "alert alert-warn";
    });
  }

  each("form[data-confirm]", function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  if (!supported()) {
    each("[data-webcrypto-missing]", function (note) { note.hidden = false; });
    each("[data-pair-this-phone] button", function (button) { button.disabled = true; });
    return;
  }
  each("[data-pair-this-phone]", function (form) { form.addEventListener("submit", pairThisPhone); });
  each("[data-operate]", function (button) {
    button.addEventListener("click", function () { operate(button); });
  });
  load().then(show).catch(function () { show(null); });
})();
