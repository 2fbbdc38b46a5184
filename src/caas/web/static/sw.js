// The customer app's service worker (scope /portal): keeps the app's shell (styles, scripts,
// icons, the offline page) and the last copy of each car's pages, so a phone without network
// still shows what the car last was, with a banner saying since when. Only GET requests are
// ever answered from or kept in a cache; the pages' copies are deleted when the reader logs out.
"use strict";

var SHELL = "caas-shell-v1";
var PAGES = "caas-pages";
var OFFLINE_PAGE = "/portal/offline";
var SHELL_FILES = [
  "/static/caas.css",
  "/static/pwa.js",
  "/static/live-status.js",
  "/static/store.js",
  "/static/favicon.svg",
  "/static/icons/icon-192.png",
  "/static/icons/icon-512.png",
  "/manifest.webmanifest",
  OFFLINE_PAGE,
];
// The car's pages and their JSON: from the network when there is one, else the last copy.
var CAR_PAGES = /^\/portal\/cars(\/|$)/;
// Never kept, even for the owner: a page that shows a one-time transfer code.
var NEVER_KEPT = /\/sell(\/|$)/;
var SAVED_AT = "X-Caas-Saved-At";

self.addEventListener("install", function (event) {
  event.waitUntil(
    caches.open(SHELL)
      .then(function (cache) { return cache.addAll(SHELL_FILES); })
      .then(function () { return self.skipWaiting(); })
  );
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys()
      .then(function (names) {
        return Promise.all(names.filter(function (name) {
          return name.indexOf("caas-shell-") === 0 && name !== SHELL;
        }).map(function (name) { return caches.delete(name); }));
      })
      .then(function () { return self.clients.claim(); })
  );
});

self.addEventListener("message", function (event) {
  var message = event.data || {};
  if (message.type === "logout") {
    event.waitUntil(caches.delete(PAGES));
  } else if (message.type === "keep" && Array.isArray(message.urls)) {
    // The list of cars asks to keep each car's page while the network is there.
    event.waitUntil(Promise.all(message.urls.filter(function (url) {
      return CAR_PAGES.test(new URL(url, self.location.origin).pathname);
    }).map(function (url) {
      return fetch(url, { credentials: "same-origin" }).then(keep(new Request(url))).catch(function () {});
    })));
  }
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if ((request.headers.get("Accept") || "").indexOf("text/event-stream") >= 0) return;
  if (CAR_PAGES.test(url.pathname)) {
    event.respondWith(networkFirst(request));
  } else if (SHELL_FILES.indexOf(url.pathname) >= 0 || url.pathname.indexOf("/static/") === 0) {
    event.respondWith(shellFirst(request));
  } else if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(offlinePage));
  }
});

// A copy of a good answer, stamped with when it was kept.
function keep(request) {
  return function (response) {
    if (!response.ok || response.redirected || response.type !== "basic") return response;
    if (NEVER_KEPT.test(new URL(request.url).pathname)) return response;
    var copy = response.clone();
    copy.blob().then(function (body) {
      var headers = new Headers(copy.headers);
      headers.set(SAVED_AT, new Date().toISOString());
      return caches.open(PAGES).then(function (cache) {
        return cache.put(request, new Response(body, { status: copy.status, statusText: copy.statusText, headers: headers }));
      });
    });
    return response;
  };
}

function networkFirst(request) {
  return fetch(request).then(keep(request)).catch(function () {
    return caches.open(PAGES)
      .then(function (cache) { return cache.match(request, { ignoreVary: true }); })
      .then(function (copy) {
        if (!copy) return request.mode === "navigate" ? offlinePage() : Response.error();
        return isPage(copy) ? withBanner(copy) : copy;
      });
  });
}

function shellFirst(request) {
  return caches.match(request, { ignoreSearch: true }).then(function (copy) {
    var fresh = fetch(request).then(function (response) {
      if (response.ok && SHELL_FILES.indexOf(new URL(request.url).pathname) >= 0) {
        var clone = response.clone();
        caches.open(SHELL).then(function (cache) { cache.put(request, clone); });
      }
      return response;
    });
    return copy || fresh;
  });
}

function offlinePage() {
  return caches.match(OFFLINE_PAGE).then(function (copy) { return copy || Response.error(); });
}

function isPage(response) {
  return (response.headers.get("Content-Type") || "").indexOf("text/html") === 0;
}

// The kept page with "offline, last updated at" on top, in the page's language: the page
// carries the sentence (data-offline-banner) and its language (<html lang>).
function withBanner(copy) {
  var savedAt = copy.headers.get(SAVED_AT);
  return copy.text().then(function (html) {
    var sentence = /data-offline-banner="([^"]*)"/.exec(html);
    var language = /<html lang="([^"]*)"/.exec(html);
    var when = savedAt ? new Date(savedAt).toLocaleString(language ? language[1] : undefined) : "";
    var text = (sentence ? sentence[1] : "Offline: last updated {when}").replace("{when}", when);
    var banner = '<div class="alert alert-warn offline-banner" role="status" data-offline-banner-shown>' + text + "</div>";
    var headers = new Headers(copy.headers);
    headers.delete("Content-Length");
    return new Response(html.replace(/(<main[^>]*>)/, "$1" + banner), { status: 200, headers: headers });
  });
}
