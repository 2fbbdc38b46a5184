// The page's side of the customer app: scrolls the phone's one-row menu to the current page,
// registers the service worker on the portal's pages,
// asks it to keep each car's page from the list of cars, lists the kept cars on the offline
// page, and deletes the kept pages when nobody is logged in any more (after logging out).
(function () {
  "use strict";
  var body = document.body;
  var PAGES = "caas-pages";

  if (body.dataset.signedOut !== undefined && window.caches) {
    caches.delete(PAGES);
    if (navigator.serviceWorker && navigator.serviceWorker.controller) {
      navigator.serviceWorker.controller.postMessage({ type: "logout" });
    }
  }
  document.querySelectorAll('form[action="/logout"], form[action="/logout/everywhere"]').forEach(function (form) {
    form.addEventListener("submit", function () { if (window.caches) caches.delete(PAGES); });
  });

  // On a phone the menu is one row that scrolls sideways: show where the reader is.
  var current = document.querySelector(".nav [aria-current=page]");
  var menu = current && current.parentElement;
  if (menu && menu.scrollWidth > menu.clientWidth) {
    menu.scrollLeft = current.offsetLeft - (menu.clientWidth - current.offsetWidth) / 2;
  }

  if (body.dataset.app === undefined || !("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("/sw.js", { scope: "/portal" }).then(function () {
    return navigator.serviceWorker.ready;
  }).then(function (registration) {
    var cars = document.querySelectorAll("a[data-car-page]");
    if (cars.length && registration.active && navigator.onLine) {
      registration.active.postMessage({
        type: "keep",
        urls: Array.prototype.map.call(cars, function (link) { return link.getAttribute("href"); }),
      });
    }
  }).catch(function () {});

  var list = document.querySelector("[data-offline-cars]");
  if (list && window.caches) {
    caches.open(PAGES).then(function (cache) { return cache.keys(); }).then(function (requests) {
      requests.forEach(function (request) {
        var path = new URL(request.url).pathname;
        if (!/^\/portal\/cars\/[^/]+$/.test(path)) return;
        var item = document.createElement("li");
        var link = document.createElement("a");
        link.href = path;
        link.textContent = decodeURIComponent(path.split("/").pop());
        item.appendChild(link);
        list.appendChild(item);
      });
    });
  }
})();
