// Crier's status page, live: listens on /v1/stream from the position the page was rendered
// at (the browser resumes with Last-Event-ID after a drop), and on each notice fetches the
// page again and swaps the sections marked data-live, announcing the change politely in
// the live region. Focus stays where it was; without this script the page is complete and
// a reload shows the latest.
(function () {
  "use strict";
  var root = document.documentElement;
  var after = root.getAttribute("data-after");
  if (!window.EventSource || !window.fetch || !window.DOMParser || !after) {
    return;
  }
  var types = [
    "incident.declared", "incident.updated", "incident.resolved", "incident.reopened",
    "incident.corrected", "incident.postmortem_published", "maintenance.scheduled",
    "maintenance.updated", "maintenance.reminder", "service.updated"
  ];
  var lang = root.getAttribute("lang") || "";
  var source = new EventSource("/v1/stream?after=" + encodeURIComponent(after) +
    "&lang=" + encodeURIComponent(lang));
  var refreshing = false;
  var again = false;
  var lastTitle = "";
  var wanted = 0;
  var tries = 0;

  function titleOf(message) {
    try {
      var data = JSON.parse(message.data).data || {};
      return data.title || data.name || "";
    } catch (e) {
      return "";
    }
  }

  // Replaces `current` by `next` unless they are alike; keeps focus on the element of the
  // same id (or the same place) if it was inside.
  function swap(current, next) {
    if (current.innerHTML === next.innerHTML) {
      return false;
    }
    var focused = document.activeElement;
    var inside = focused && current.contains(focused) && focused !== current;
    var focusId = inside ? focused.id : "";
    var open = [];
    current.querySelectorAll("details[open]").forEach(function (d, i) {
      open.push(i);
    });
    current.innerHTML = next.innerHTML;
    var details = current.querySelectorAll("details");
    open.forEach(function (i) {
      if (details[i]) {
        details[i].open = true;
      }
    });
    if (inside) {
      var target = focusId ? document.getElementById(focusId) : null;
      (target || current).focus({ preventScroll: true });
    }
    if (!window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
      current.classList.remove("fresh");
      void current.offsetWidth;
      current.classList.add("fresh");
    }
    return true;
  }

  function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    again = false;
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.text() : Promise.reject(response.status);
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html");
        var rendered = Number(next.documentElement.getAttribute("data-after") || 0);
        if (rendered < wanted && tries < 25) {
          // Rendered before the notice reached this server's pages: ask again shortly.
          again = true;
          return;
        }
        var changed = false;
        document.querySelectorAll("[data-live][id]").forEach(function (section) {
          var replacement = next.getElementById(section.id);
          if (replacement && swap(section, replacement)) {
            changed = true;
          }
        });
        root.setAttribute("data-after", String(rendered));
        var live = document.getElementById("live");
        if (changed && live) {
          var word = live.getAttribute("data-updated") || "Updated";
          live.textContent = word + ": " + (lastTitle || new Date().toLocaleTimeString());
        }
      })
      .catch(function () {
        again = true;
      })
      .then(function () {
        refreshing = false;
        if (again && tries < 25) {
          tries += 1;
          window.setTimeout(refresh, 200);
        } else {
          tries = 0;
        }
      });
  }

  types.forEach(function (type) {
    source.addEventListener(type, function (message) {
      var position = Number(message.lastEventId || 0);
      if (position > wanted) {
        wanted = position;
      }
      lastTitle = titleOf(message);
      refresh();
    });
  });
})();
