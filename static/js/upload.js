// The photo upload: drop several files on the zone (or anywhere on the page) or pick them, then each
// file goes up in its own request with a progress bar; the button is disabled until all are done and
// the gallery below is refreshed with the new cards. Without this script the form posts as usual.
(function () {
  "use strict";

  var PARALLEL = 2;

  function init() {
    var form = document.getElementById("upload-form");
    if (!form) return;
    var input = form.querySelector("input[type=file]");
    var zone = form.querySelector("[data-dropzone]");
    var list = document.getElementById("upload-list");
    var button = form.querySelector("[data-upload-button]");
    var summary = form.querySelector("[data-chosen-summary]");
    var maxFiles = Number(form.dataset.maxFiles || 20);
    var maxBytes = Number(form.dataset.maxMb || 50) * 1024 * 1024;
    var busy = false;

    function sizeText(bytes) {
      if (bytes < 1024) return bytes + " bytes";
      if (bytes < 1024 * 1024) return Math.round(bytes / 1024).toLocaleString() + " KB";
      return (bytes / 1024 / 1024).toFixed(1) + " MB";
    }

    function row(file) {
      var item = document.createElement("li");
      item.className = "upload-item";
      var name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = file.name;
      var size = document.createElement("span");
      size.className = "upload-size muted small";
      size.textContent = sizeText(file.size);
      var bar = document.createElement("progress");
      bar.className = "meter upload-progress";
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute("aria-label", "Upload of " + file.name);
      var state = document.createElement("span");
      state.className = "upload-state small";
      state.textContent = "Ready";
      item.appendChild(name);
      item.appendChild(size);
      item.appendChild(bar);
      item.appendChild(state);
      return item;
    }

    function showChosen() {
      list.textContent = "";
      var files = Array.prototype.slice.call(input.files || []);
      files.forEach(function (file) { list.appendChild(row(file)); });
      summary.hidden = files.length === 0;
      summary.textContent = files.length === 1 ? "1 photo chosen" : files.length + " photos chosen";
      if (files.length > maxFiles) {
        summary.textContent += " — at most " + maxFiles + " at once, please remove some";
      }
    }

    function take(files) {
      if (busy || !files || !files.length) return;
      var transfer = new DataTransfer();
      Array.prototype.forEach.call(files, function (file) { transfer.items.add(file); });
      input.files = transfer.files;
      showChosen();
    }

    input.addEventListener("change", showChosen);

    // A file dropped anywhere must not make the browser leave the app to show it.
    function hasFiles(event) {
      return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
    }
    document.addEventListener("dragover", function (event) {
      if (!hasFiles(event)) return;
      event.preventDefault();
      zone.classList.add("dragover");
    });
    document.addEventListener("dragleave", function (event) {
      if (event.relatedTarget === null) zone.classList.remove("dragover");
    });
    document.addEventListener("drop", function (event) {
      if (!hasFiles(event)) return;
      event.preventDefault();
      zone.classList.remove("dragover");
      take(event.dataTransfer.files);
    });

    function send(file, item, token, position) {
      return new Promise(function (resolve) {
        var bar = item.querySelector("progress");
        var state = item.querySelector(".upload-state");
        var body = new FormData();
        body.append("csrf_token", token);
        body.append("photos", file, file.name);
        // Its place in this upload: the first few are resized at once, the rest as bulk work.
        body.append("position", String(position));
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.action);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.setRequestHeader("X-CSRFToken", token);
        xhr.upload.addEventListener("progress", function (event) {
          if (!event.lengthComputable) return;
          bar.value = Math.round(100 * event.loaded / event.total);
          state.textContent = bar.value + " %";
        });
        function finish(ok, text) {
          item.classList.add(ok ? "upload-done" : "upload-failed");
          if (ok) bar.value = 100;
          state.textContent = text;
          resolve(ok);
        }
        xhr.addEventListener("load", function () {
          var answer = null;
          try { answer = JSON.parse(xhr.responseText); } catch (ignored) { answer = null; }
          if (xhr.status === 200 && answer && answer.files && answer.files.length) {
            var outcome = answer.files[0];
            finish(!outcome.error, outcome.error ? outcome.error : "Uploaded — resizing");
          } else if (xhr.status === 413) {
            finish(false, "Too large to upload");
          } else {
            finish(false, (answer && answer.error) || "Upload failed (error " + xhr.status + ")");
          }
        });
        xhr.addEventListener("error", function () { finish(false, "Upload failed: no connection"); });
        state.textContent = "Starting…";
        xhr.send(body);
      });
    }

    function refreshGallery() {
      return fetch(window.location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("gallery-region");
          var region = document.getElementById("gallery-region");
          if (!fresh || !region) return;
          region.innerHTML = fresh.innerHTML;
          if (window.htmx) window.htmx.process(region);
        });
    }

    form.addEventListener("submit", function (event) {
      var files = Array.prototype.slice.call(input.files || []);
      if (!files.length || files.length > maxFiles || typeof FormData === "undefined") return; // the server explains
      event.preventDefault();
      if (busy) return;
      busy = true;
      button.disabled = true;
      button.textContent = "Uploading…";
      input.disabled = true;
      zone.classList.add("busy");
      var token = form.querySelector("input[name=csrf_token]").value;
      var items = list.querySelectorAll(".upload-item");
      var next = 0;
      var okCount = 0;
      function worker() {
        if (next >= files.length) return Promise.resolve();
        var index = next++;
        var file = files[index];
        var check = file.size > maxBytes ? Promise.resolve(false) : send(file, items[index], token, index);
        if (file.size > maxBytes) {
          items[index].classList.add("upload-failed");
          items[index].querySelector(".upload-state").textContent = "Larger than " + sizeText(maxBytes);
        }
        return check.then(function (ok) { if (ok) okCount++; return worker(); });
      }
      var workers = [];
      for (var i = 0; i < Math.min(PARALLEL, files.length); i++) workers.push(worker());
      Promise.all(workers).then(function () {
        summary.hidden = false;
        summary.textContent = okCount + " of " + files.length + " uploaded; resizing in the background.";
        return okCount ? refreshGallery() : null;
      }).finally(function () {
        busy = false;
        input.value = "";
        input.disabled = false;
        zone.classList.remove("busy");
        button.disabled = false;
        button.textContent = "Upload";
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
