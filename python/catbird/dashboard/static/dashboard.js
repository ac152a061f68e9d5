// Live updates: re-fetch the page's <main> when an engine event concerns it.
// The server sends "ready" once it listens, "run" per engine event; without
// EventSource, or while the stream is down, the page polls every 5 seconds.
(function () {
  var main = document.querySelector("main[data-live]");
  var watch = main && main.dataset.live;
  if (!watch) return;
  var body = document.body, timer = null, poller = null, listened = false;
  function refresh() {
    timer = null;
    fetch(location.href, { headers: { "X-Requested-With": "catbird-dashboard" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var fresh = html && new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (fresh) main.innerHTML = fresh.innerHTML;
      });
  }
  function soon() { if (!timer) timer = setTimeout(refresh, 200); }
  function poll(on) {
    if (on && !poller) { poller = setInterval(refresh, 5000); body.dataset.live = "polling"; }
    if (!on && poller) { clearInterval(poller); poller = null; }
  }
  function concerns(e) {
    if (watch === "*" || !e.kind || !e.name) return true;
    return watch === e.kind + ":" + e.name;
  }
  if (!window.EventSource) return poll(true);
  var source = new EventSource(body.dataset.events);
  // After a reconnection, events may have been missed: refresh once.
  source.addEventListener("ready", function () {
    poll(false);
    body.dataset.live = "on";
    if (listened) soon();
    listened = true;
  });
  source.addEventListener("run", function (m) { if (concerns(JSON.parse(m.data))) soon(); });
  source.onerror = function () { poll(true); };
  // Free the connection when leaving: browsers allow six per host.
  window.addEventListener("pagehide", function () { source.close(); });
})();
