// Forms with data-confirm="question" ask before they submit. A file of its own rather than an
// onsubmit attribute: the Content-Security-Policy runs no inline script, ours included.
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
