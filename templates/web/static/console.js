// Progressive enhancement only: every page works without it. Asks before resolving an alert.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  if (button && button.dataset.action === "resolve" && !window.confirm("Resolve this alert?")) {
    event.preventDefault();
  }
});
