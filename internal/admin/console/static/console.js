// Shows each time also in the viewer's own zone (the page prints WIB).
(function () {
  function localize(root) {
    var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone === "Asia/Jakarta") return; // WIB already
    root.querySelectorAll("time[data-local]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.setAttribute("data-local-text", "(" + fmt.format(d) + " your time)");
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:afterSettle", function (e) { localize(e.target); });
})();
