"use strict";
// The page: list the models, send an upload or a drawing to /api/classify, draw the answer. No libraries.
const $ = (id) => document.getElementById(id);
let models = {};

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
  $("result").hidden = true;
  $("placeholder").hidden = true;
}

function clearError() { $("error").hidden = true; }

async function loadModels() {
  let body;
  try {
    const response = await fetch("/api/models");
    body = await response.json();
    if (!response.ok) { showError(body.error || `the model list failed (${response.status})`); return; }
  } catch (e) { showError("Error: the web app did not answer (hint: reload the page)"); return; }
  const select = $("model");
  select.innerHTML = "";
  models = {};
  for (const m of body.classifiers) {
    models[m.name] = m;
    select.add(new Option(`${m.name} (v${m.version})`, m.name));
  }
  for (const m of body.others) {
    models[m.name] = m;
    select.add(new Option(`${m.name} (not an image classifier)`, m.name));
  }
  select.disabled = select.options.length === 0;
  if (!body.classifiers.length) {
    showError("Error: none of the deployed models classifies images" +
              (body.unreachable.length ? ": " + body.unreachable.join("; ") : ""));
  }
  describeModel();
}

function describeModel() {
  const m = models[$("model").value];
  $("model-info").textContent = !m ? "" : m.reason ? `Does not classify images: ${m.reason}`
    : `Input ${m.input}, via ${m.api === "classify" ? "Classify" : "Predict"} over gRPC.`;
}

async function classify(blob, filename) {
  clearError();
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("image", blob, filename);
  for (const b of document.querySelectorAll("button.primary")) b.disabled = true;
  try {
    const response = await fetch("/api/classify", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) { showError(body.error || `Error: the web app answered ${response.status}`); return; }
    showResult(body);
  } catch (e) {
    showError("Error: the web app did not answer (hint: reload the page and try again)");
  } finally {
    for (const b of document.querySelectorAll("button.primary")) b.disabled = false;
  }
}

function showResult(r) {
  const best = r.classes[0];
  $("prediction").textContent = best.label;
  $("confidence").textContent = `${(best.score * 100).toFixed(1)} % confident`;
  const bars = $("bars");
  bars.innerHTML = "";
  r.classes.slice(0, 5).forEach((c, i) => {
    const li = document.createElement("li");
    if (i === 0) li.className = "top";
    li.dataset.label = c.label;
    li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
                   '<span class="score"></span>';
    li.querySelector(".name").textContent = c.label;
    li.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, c.score)) * 100}%`;
    li.querySelector(".score").textContent = `${(c.score * 100).toFixed(1)} %`;
    bars.appendChild(li);
  });
  $("meta-model").textContent = r.model;
  $("meta-version").textContent = r.version;
  $("meta-replica").textContent = `${r.replica} (${r.replica_source})`;
  $("meta-latency").textContent = `${r.latency_ms.toFixed(1)} ms model server, ${r.total_ms.toFixed(1)} ms in total`;
  drawSeen(r.model_input);
  $("placeholder").hidden = true;
  $("result").hidden = false;
}

function drawSeen(input) {
  const canvas = $("seen");
  const ctx = canvas.getContext("2d");
  const cw = canvas.width / input.width, ch = canvas.height / input.height, ink = input.channels === 1;
  for (let y = 0; y < input.height; y++) {
    for (let x = 0; x < input.width; x++) {
      const at = (y * input.width + x) * input.channels;
      const v = (i) => Math.round(255 * Math.max(0, Math.min(1, input.values[at + i] / input.pixel_max)));
      ctx.fillStyle = ink ? `rgb(${v(0)},${v(0)},${v(0)})` : `rgb(${v(0)},${v(1)},${v(2)})`;
      ctx.fillRect(x * cw, y * ch, Math.ceil(cw), Math.ceil(ch));
    }
  }
}

// Tabs
function selectTab(upload) {
  $("tab-upload").classList.toggle("active", upload);
  $("tab-draw").classList.toggle("active", !upload);
  $("tab-upload").setAttribute("aria-selected", upload);
  $("tab-draw").setAttribute("aria-selected", !upload);
  $("upload-panel").hidden = !upload;
  $("draw-panel").hidden = upload;
}
$("tab-upload").addEventListener("click", () => selectTab(true));
$("tab-draw").addEventListener("click", () => selectTab(false));
$("model").addEventListener("change", describeModel);

// Upload
const fileInput = $("file");
fileInput.addEventListener("change", () => {
  const file = fileInput.files[0];
  $("file-label").textContent = file ? `${file.name} · ${file.size.toLocaleString()} bytes` :
    "Choose a PNG or JPEG (any size), or drop it here";
  const preview = $("file-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !(file && file.type.startsWith("image/"));
  if (!preview.hidden) preview.src = URL.createObjectURL(file);
});
$("upload-panel").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = fileInput.files[0];
  if (!file) { showError("Error: no file chosen (hint: choose an image first)"); return; }
  classify(file, file.name);
});
const drop = document.querySelector(".drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) { fileInput.files = e.dataTransfer.files; fileInput.dispatchEvent(new Event("change")); }
});

// Drawing pad: dark ink on white, like a pen on paper (the server converts it for the model).
const pad = $("pad");
const pen = pad.getContext("2d");
function clearPad() { pen.fillStyle = "#fff"; pen.fillRect(0, 0, pad.width, pad.height); }
clearPad();
pen.lineCap = "round"; pen.lineJoin = "round"; pen.lineWidth = 22; pen.strokeStyle = "#000";
let drawing = false;
const at = (e) => { const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
pad.addEventListener("pointerdown", (e) => { drawing = true; pad.setPointerCapture(e.pointerId);
  const [x, y] = at(e); pen.beginPath(); pen.moveTo(x, y); pen.lineTo(x, y); pen.stroke(); });
pad.addEventListener("pointermove", (e) => { if (!drawing) return; const [x, y] = at(e); pen.lineTo(x, y); pen.stroke(); });
const stop = () => { drawing = false; };
pad.addEventListener("pointerup", stop);
pad.addEventListener("pointercancel", stop);
$("clear").addEventListener("click", clearPad);
$("draw-button").addEventListener("click", () => pad.toBlob((blob) => classify(blob, "drawing.png"), "image/png"));

loadModels();
