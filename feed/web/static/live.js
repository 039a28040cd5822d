// rtbh console live updates: the server sends an event for every change
// to the active set the user may see (server-sent events, /events); the
// page then fetches itself again and swaps its #live section. Hand-written
// (no library): these few lines are all it takes.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var dot = document.getElementById("live-status");
  if (!live || !window.EventSource) return;
  var timer = null, busy = false, again = false, opened = false, last = 0;

  // At most two refreshes a second, however fast changes come (a bulk
  // import): each is one request against the client's rate limit.
  function schedule(ms) {
    if (!timer) timer = setTimeout(refresh, Math.max(ms, last + 500 - Date.now()));
  }

  function typing() {
    var a = document.activeElement;
    return a && live.contains(a) && a.tagName === "INPUT" && a.value !== "";
  }

  function refresh() {
    timer = null;
    if (busy) { again = true; return; }
    if (typing()) { schedule(1000); return; } // do not throw away what is being typed
    busy = true;
    last = Date.now();
    // data-src: the page's own URL when the page shown is a form's answer.
    fetch(live.dataset.src || location.href, { credentials: "same-origin", headers: { "X-Requested-With": "rtbh-live" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; schedule(0); } });
  }

  function state(cls, title) { if (dot) { dot.className = "live " + cls; dot.title = title; } }

  var es = new EventSource("/events");
  es.addEventListener("change", function () { schedule(100); });
  es.onopen = function () {
    state("on", "live: changes appear without a reload");
    if (opened) schedule(0); // changes may have been missed while disconnected
    opened = true;
  };
  es.onerror = function () { state("off", "live updates disconnected: reconnecting"); };
})();
