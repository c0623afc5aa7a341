// Pages that reload themselves to show a job's progress (a checkpoint while it exports, a retrain
// round while its steps run) must not throw away what the user is typing into their form: once
// any field changed, reloadUnlessEdited() says so in `note` instead of reloading.
(function () {
  let edited = false;
  function mark(event) {
    if (event.target && event.target.form) edited = true;
  }
  document.addEventListener("input", mark, true);
  document.addEventListener("change", mark, true);
  window.reloadUnlessEdited = function (note) {
    if (!edited) {
      window.location.reload();
      return true;
    }
    if (note) {
      note.textContent = "updated since this page loaded: save or reload to see it " +
        "(not reloading while you have unsaved changes)";
      note.dataset.held = "true";
    }
    return false;
  };
})();
