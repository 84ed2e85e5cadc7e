// Backhaul's page behaviour: the phone menu, confirmation dialogs, "job finished" toasts, and what the
// user sees when a request to the server fails. Loaded with <script defer> on every page: no inline
// script or handler anywhere, so a strict Content-Security-Policy (script-src 'self') holds.
(function () {
  "use strict";

  var TOAST_LIFETIME_MS = 6000;
  var MAX_TOASTS = 3;
  var connectionToast = null;

  // -- phone menu ------------------------------------------------------------------------------
  function setMenu(open) {
    var button = document.querySelector("[data-menu-toggle]");
    var menu = document.getElementById("site-menu");
    if (!button || !menu) return;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    menu.classList.toggle("open", open);
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-menu-toggle]");
    if (toggle) {
      setMenu(toggle.getAttribute("aria-expanded") !== "true");
      return;
    }
    var close = event.target.closest(".toast-close");
    if (close) dismiss(close.closest(".toast"));
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") setMenu(false);
  });

  // -- confirmations: <form data-confirm="Delete this photo?"> and htmx's hx-confirm ask in a <dialog> --
  function ask(source, question, onYes) {
    var dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return false; // no <dialog>: the caller decides
    dialog.querySelector("#confirm-text").textContent = question;
    var ok = dialog.querySelector("[data-confirm-ok]");
    var no = dialog.querySelector("button[value=cancel]");
    ok.textContent = source.dataset.confirmButton || "OK";
    no.textContent = source.dataset.confirmDismiss || "Cancel";
    ok.classList.toggle("btn-danger-solid", source.dataset.confirmTone === "danger");
    dialog.returnValue = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "ok") onYes();
    });
    dialog.showModal();
    return true;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-confirm]") || form.dataset.confirmed === "yes") return;
    var submitter = event.submitter || null;
    if (ask(form, form.dataset.confirm, function () {
      form.dataset.confirmed = "yes";
      if (form.requestSubmit) form.requestSubmit(submitter); else form.submit();
    })) event.preventDefault();
  }, true);

  // While a question is open, polls do not replace the page under it (the button asked about must still
  // be there when the answer is "yes").
  function askingNow() {
    var dialog = document.getElementById("confirm-dialog");
    return Boolean(dialog && dialog.open);
  }
  function isPoll(detail) {
    return ((detail.requestConfig && detail.requestConfig.verb) || "get") === "get";
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (askingNow() && isPoll(event.detail)) event.preventDefault();
  });
  // A poll already on its way when the question opened must not land either: it would replace the
  // button being asked about, and the answer would go to an element no longer on the page.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (askingNow() && isPoll(event.detail)) event.detail.shouldSwap = false;
  });

  document.addEventListener("htmx:confirm", function (event) {
    var question = event.detail.question;
    if (!question) return;
    if (ask(event.detail.elt, question, function () { event.detail.issueRequest(true); })) event.preventDefault();
  });

  // -- toasts -----------------------------------------------------------------------------------
  function dismiss(toast) {
    if (!toast || toast.classList.contains("toast-leaving")) return;
    toast.classList.add("toast-leaving");
    window.setTimeout(function () { toast.remove(); }, 200);
  }

  function arm(toast) {
    if (toast.dataset.armed) return;
    toast.dataset.armed = "yes";
    if (toast.dataset.sticky) return;
    var timer = window.setTimeout(function () { dismiss(toast); }, TOAST_LIFETIME_MS);
    function hold() { window.clearTimeout(timer); }
    function release() {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () { dismiss(toast); }, TOAST_LIFETIME_MS / 2);
    }
    toast.addEventListener("mouseenter", hold);
    toast.addEventListener("focusin", hold);
    toast.addEventListener("mouseleave", release);
    toast.addEventListener("focusout", release);
  }

  function tidyToasts() {
    var region = document.getElementById("toasts");
    if (!region) return;
    var toasts = region.querySelectorAll(".toast:not(.toast-leaving)");
    toasts.forEach(arm);
    for (var i = 0; i < toasts.length - MAX_TOASTS; i++) dismiss(toasts[i]);
  }

  function makeToast(text, tone, sticky) {
    var region = document.getElementById("toasts");
    if (!region) return null;
    var toast = document.createElement("div");
    toast.className = "toast toast-" + tone;
    toast.setAttribute("role", tone === "error" ? "alert" : "status");
    if (sticky) toast.dataset.sticky = "yes";
    var span = document.createElement("span");
    span.className = "toast-text";
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss notification");
    close.textContent = "×";
    toast.appendChild(span);
    toast.appendChild(close);
    region.appendChild(toast);
    tidyToasts();
    return toast;
  }

  // Jobs whose live status this page already shows are not announced again.
  document.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.elt || event.detail.elt.id !== "toasts") return;
    var ids = [];
    document.querySelectorAll("[data-live-job]").forEach(function (el) {
      if (el.dataset.liveJob) ids.push(el.dataset.liveJob);
    });
    if (ids.length) event.detail.parameters.on_screen = ids.join(",");
  });

  document.addEventListener("htmx:afterSwap", tidyToasts);
  document.addEventListener("DOMContentLoaded", tidyToasts);

  // -- failed requests --------------------------------------------------------------------------
  // htmx 2 swaps nothing for 4xx/5xx and reports a network failure only as an event. Polls keep their
  // timer (every Ns) through an outage, so one sticky toast says we are still trying, and goes away
  // with the first answer that succeeds. A failed action (a button, a form) shows our error message.
  function errorText(xhr) {
    var fallback = "Something went wrong (error " + xhr.status + "). Please try again.";
    if (!xhr.responseText) return fallback;
    var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var box = doc.querySelector(".error-box p, .error-box, main h1");
    var text = box ? box.textContent.trim() : "";
    return text || fallback;
  }

  function isPoll(detail) {
    var elt = detail.elt;
    var verb = (detail.requestConfig && detail.requestConfig.verb) || "get";
    return verb === "get" && elt && /every\s/.test(elt.getAttribute("hx-trigger") || "");
  }

  function stillTrying(message) {
    if (connectionToast && connectionToast.isConnected) {
      connectionToast.querySelector(".toast-text").textContent = message;
      return;
    }
    connectionToast = makeToast(message, "warning", true);
  }

  document.addEventListener("htmx:sendError", function (event) {
    if (isPoll(event.detail)) stillTrying("Cannot reach Backhaul right now — still trying…");
    else makeToast("Cannot reach Backhaul — check your connection and try again.", "error", true);
  });

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (isPoll(event.detail) && (xhr.status >= 500 || xhr.status === 0)) {
      stillTrying("Backhaul is not answering right now — still trying…");
    } else if (xhr.status === 401 || xhr.status === 403 && /log in/i.test(xhr.responseText || "")) {
      makeToast("You have been logged out. Reload the page to log in again.", "error", true);
    } else {
      makeToast(errorText(xhr), "error", true);
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful && connectionToast) {
      dismiss(connectionToast);
      connectionToast = null;
    }
  });
})();

// -- time to result: a job page asks every 150 ms during the job's first 2 seconds --------------
// (its hx-trigger "every 1s" poll keeps running; the server sets data-fast-poll-ms only while the job
// is that young, so a page left open later costs exactly what it did.)
(function () {
  "use strict";
  var FAST_MS = 150;

  function fastStart(root) {
    var el = (root || document).querySelector ? (root || document).querySelector("[data-fast-poll-ms]") : null;
    if (!el || el.dataset.fastStarted || typeof htmx === "undefined") return;
    el.dataset.fastStarted = "yes";
    var id = el.id;
    var until = Date.now() + Number(el.dataset.fastPollMs || 0);
    function tick() {
      var current = document.getElementById(id);
      var url = current && current.getAttribute("hx-get");
      if (!url || Date.now() > until) return;
      htmx.ajax("GET", url, { source: current, target: current, swap: "outerHTML" });
      window.setTimeout(tick, FAST_MS);
    }
    window.setTimeout(tick, FAST_MS);
  }

  document.addEventListener("DOMContentLoaded", function () { fastStart(document); });
})();
