// Review grid: decisions are sent as small CSRF-protected POSTs; no libraries, no CDN.
(function () {
  "use strict";
  var grid = document.getElementById("review-grid");
  if (!grid) return;
  var decideUrl = grid.getAttribute("data-decide-url");
  var counter = document.getElementById("accepted-count");
  var labels = { accepted: "Accepted", rejected: "Rejected", unreviewed: "Unreviewed" };
  var keys = { a: "accepted", r: "rejected", u: "unreviewed" };

  function csrfToken(tile) {
    var input = (tile || document).querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function decide(tile, decision) {
    var before = tile.getAttribute("data-decision");
    return fetch(decideUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(tile) },
      body: JSON.stringify({ id: Number(tile.getAttribute("data-id")), decision: decision })
    }).then(function (response) {
      if (!response.ok) { tile.classList.add("error"); return; }
      tile.classList.remove("error");
      tile.setAttribute("data-decision", decision);
      tile.querySelector(".decision-label").textContent = labels[decision];
      if (counter && before !== decision) {
        var n = Number(counter.textContent);
        if (decision === "accepted") n += 1;
        if (before === "accepted") n -= 1;
        counter.textContent = String(n);
      }
    }, function () { tile.classList.add("error"); });
  }

  grid.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = event.submitter;
    var tile = event.target.closest(".tile");
    if (button && tile) decide(tile, button.value);
  });

  grid.addEventListener("keydown", function (event) {
    var tile = event.target.closest(".tile");
    if (!tile || event.target.tagName === "BUTTON" && event.key === "Enter") return;
    var key = event.key.toLowerCase();
    if (keys[key]) {
      event.preventDefault();
      decide(tile, keys[key]);
      var next = tile.nextElementSibling;
      if (next && next.classList.contains("tile")) next.focus();
    } else if (key === "arrowright" || key === "arrowleft") {
      event.preventDefault();
      var to = key === "arrowright" ? tile.nextElementSibling : tile.previousElementSibling;
      if (to && to.classList.contains("tile")) to.focus();
    }
  });
})();
