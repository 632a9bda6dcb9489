/*
 * ParkGate operator actions (plate lists, remote open, signs): small behaviours the pages work
 * without, loaded from this file because the Content-Security-Policy allows no inline code.
 *
 * - form[data-confirm]: asks the browser's confirm() with the attribute's text before posting
 *   (removing a list entry).
 * - form[data-waiting]: the remote-open confirmation. On submit its buttons are disabled and the
 *   attribute's text is shown in #open-waiting while the server waits for the gate's answer; a
 *   second click does not send a second command.
 */
/* eslint-env browser */
(function () {
  "use strict";

  function onSubmit(event) {
    var form = event.target;
    if (!form || form.tagName !== "FORM") return;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    var waiting = form.getAttribute("data-waiting");
    if (!waiting) return;
    if (form.getAttribute("data-sent") === "1") {
      event.preventDefault(); // already sent: one command per confirmation
      return;
    }
    form.setAttribute("data-sent", "1");
    Array.prototype.forEach.call(form.querySelectorAll("button"), function (button) {
      button.disabled = true;
    });
    var note = document.getElementById("open-waiting");
    if (note) {
      note.textContent = waiting;
      note.hidden = false;
    }
  }

  document.addEventListener("submit", onSubmit);
})();
