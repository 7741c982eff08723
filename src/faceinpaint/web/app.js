// faceinpaint web app: photo -> face box (1:1) -> painted mask -> POST /v1/inpaint (JSON) -> pasted back, compared.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  photo: null, // HTMLCanvasElement with the photo's pixels
  reference: null, // data URL of the reference photo
  models: null, // GET v1/models: the served models, the default and the reference default
  box: null, // {x, y, side} in photo pixels, integers, inside the photo
  mask: null, // canvas the size of the photo; alpha = hole
  ops: [], // mask edits, replayed on undo / redo
  undone: [],
  tool: "brush",
  parts: {}, // preset name -> canvas (alpha = hole) for the face in the box
  result: null, // canvas: the photo with the inpainted crop pasted back
};

function message(text, kind = "error") {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = kind;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || `the server answered ${response.status}`);
  return data;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("this file is not an image the browser can open (try PNG or JPEG)"));
    image.src = url;
  });
}

function canvasOf(width, height, source) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  if (source) canvas.getContext("2d").drawImage(source, 0, 0);
  return canvas;
}

// A grey mask image (white = hole) -> a canvas whose alpha is the hole.
function alphaMask(image) {
  const canvas = canvasOf(image.width, image.height, image);
  const context = canvas.getContext("2d");
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    pixels.data[i + 3] = pixels.data[i];
    pixels.data[i] = 255; pixels.data[i + 1] = 0; pixels.data[i + 2] = 0;
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

async function loadModels() {
  try {
    const data = await api("v1/models");
    const select = $("model");
    select.replaceChildren(...data.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = `${model.name} (${model.kind}${model.reference ? ", uses a reference" : ""})`;
      return option;
    }));
    select.value = data.default;
    state.models = data;
  } catch (error) {
    message(`Cannot reach the server: ${error.message}`);
  }
}

async function openPhoto(file) {
  message("");
  if (!file) return;
  if (!file.type.startsWith("image/")) { message(`${file.name} is not an image.`); return; }
  try {
    const url = await readFile(file);
    const image = await loadImage(url);
    state.photo = canvasOf(image.naturalWidth, image.naturalHeight, image);
    state.mask = canvasOf(image.naturalWidth, image.naturalHeight);
    state.ops = []; state.undone = []; state.parts = {}; state.result = null;
    const side = Math.min(image.naturalWidth, image.naturalHeight);
    setBox(Math.floor((image.naturalWidth - side) / 2), Math.floor((image.naturalHeight - side) / 2), side);
    $("step-box").hidden = false; $("step-mask").hidden = false; $("step-result").hidden = true;
    $("presets").hidden = true;
    $("overview").width = image.naturalWidth; $("overview").height = image.naturalHeight;
    render();
    await detectFaces(url);
  } catch (error) {
    message(error.message);
  }
}

async function detectFaces(url) {
  $("box-hint").textContent = "Looking for faces...";
  try {
    const data = await api("v1/faces", { image: url });
    if (!data.available) { $("box-hint").textContent = "Drag the square over the face (face detection is not installed)."; return; }
    if (!data.faces.length) { $("box-hint").textContent = "No face found: drag the square over the face."; return; }
    const [left, top, right, bottom] = data.faces[0].box;
    const side = Math.round(Math.max(right - left, bottom - top) * 2.0);
    setBox(Math.round((left + right - side) / 2), Math.round((top + bottom - side) / 2), side);
    $("box-hint").textContent = `Found ${data.faces.length} face(s); drag the square to choose another.`;
    if (data.faces[0].parts) {
      for (const [part, url] of Object.entries(data.faces[0].parts)) state.parts[part] = alphaMask(await loadImage(url));
      $("presets").hidden = false;
    }
    render();
  } catch (error) {
    $("box-hint").textContent = "Drag the square over the face.";
  }
}

function setBox(x, y, side) {
  const { width, height } = state.photo;
  side = Math.max(8, Math.min(Math.round(side), width, height));
  x = Math.max(0, Math.min(Math.round(x), width - side));
  y = Math.max(0, Math.min(Math.round(y), height - side));
  state.box = { x, y, side };
  $("box-size").value = Math.round((100 * side) / Math.min(width, height));
}

function drawOp(context, op) {
  if (op.type === "clear") { context.clearRect(0, 0, context.canvas.width, context.canvas.height); return; }
  context.globalCompositeOperation = op.mode === "erase" ? "destination-out" : "source-over";
  if (op.type === "preset") { context.drawImage(op.canvas, 0, 0); }
  else {
    context.strokeStyle = context.fillStyle = "rgb(255, 0, 0)";
    context.lineWidth = 2 * op.radius; context.lineCap = "round"; context.lineJoin = "round";
    context.beginPath();
    const [first, ...rest] = op.points;
    if (!rest.length) { context.arc(first[0], first[1], op.radius, 0, 2 * Math.PI); context.fill(); }
    else {
      context.moveTo(first[0], first[1]);
      for (const [x, y] of rest) context.lineTo(x, y);
      context.stroke();
    }
  }
  context.globalCompositeOperation = "source-over";
}

function replay() {
  const context = state.mask.getContext("2d");
  context.clearRect(0, 0, state.mask.width, state.mask.height);
  for (const op of state.ops) drawOp(context, op);
  render();
}

function addOp(op) {
  state.ops.push(op); state.undone = [];
  drawOp(state.mask.getContext("2d"), op);
  render();
}

function render() {
  if (!state.photo) return;
  const { x, y, side } = state.box;
  const overview = $("overview").getContext("2d");
  overview.drawImage(state.photo, 0, 0);
  overview.globalAlpha = 0.5; overview.drawImage(state.mask, 0, 0); overview.globalAlpha = 1;
  overview.fillStyle = "rgba(0, 0, 0, 0.45)";
  overview.fillRect(0, 0, state.photo.width, y);
  overview.fillRect(0, y + side, state.photo.width, state.photo.height - y - side);
  overview.fillRect(0, y, x, side);
  overview.fillRect(x + side, y, state.photo.width - x - side, side);
  overview.strokeStyle = "#ffd43b"; overview.lineWidth = Math.max(2, state.photo.width / 250);
  overview.strokeRect(x, y, side, side);

  const editor = $("editor");
  const size = Math.min(side, 768);
  if (editor.width !== size) { editor.width = size; editor.height = size; }
  const context = editor.getContext("2d");
  context.drawImage(state.photo, x, y, side, side, 0, 0, size, size);
  context.globalAlpha = 0.55; context.drawImage(state.mask, x, y, side, side, 0, 0, size, size); context.globalAlpha = 1;
  $("undo").disabled = !state.ops.length; $("redo").disabled = !state.undone.length;
}

// Pointer position on a canvas -> photo pixels.
function photoPoint(event, canvas) {
  const rect = canvas.getBoundingClientRect();
  const u = (event.clientX - rect.left) / rect.width, v = (event.clientY - rect.top) / rect.height;
  if (canvas.id === "overview") return [u * state.photo.width, v * state.photo.height];
  return [state.box.x + u * state.box.side, state.box.y + v * state.box.side];
}

function setupEditor() {
  const editor = $("editor");
  let stroke = null;
  editor.addEventListener("pointerdown", (event) => {
    if (!state.photo) return;
    editor.setPointerCapture(event.pointerId);
    const radius = Math.max(1, (state.box.side * $("brush-size").value) / 200);
    stroke = { type: "stroke", mode: state.tool === "eraser" ? "erase" : "paint", radius, points: [photoPoint(event, editor)] };
    addOp(stroke);
  });
  editor.addEventListener("pointermove", (event) => {
    if (!stroke) return;
    stroke.points.push(photoPoint(event, editor));
    replay();
  });
  const end = () => { stroke = null; };
  editor.addEventListener("pointerup", end);
  editor.addEventListener("pointercancel", end);

  const overview = $("overview");
  let drag = null;
  overview.addEventListener("pointerdown", (event) => {
    if (!state.photo) return;
    overview.setPointerCapture(event.pointerId);
    const [px, py] = photoPoint(event, overview);
    drag = { px, py, x: state.box.x, y: state.box.y };
  });
  overview.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const [px, py] = photoPoint(event, overview);
    setBox(drag.x + px - drag.px, drag.y + py - drag.py, state.box.side);
    render();
  });
  overview.addEventListener("pointerup", () => { drag = null; });
  $("box-size").addEventListener("input", (event) => {
    const { x, y, side } = state.box;
    const wanted = (Math.min(state.photo.width, state.photo.height) * event.target.value) / 100;
    setBox(x + (side - wanted) / 2, y + (side - wanted) / 2, wanted);
    render();
  });
}

function cropCanvas(source) {
  const { x, y, side } = state.box;
  const canvas = canvasOf(side, side);
  canvas.getContext("2d").drawImage(source, x, y, side, side, 0, 0, side, side);
  return canvas;
}

function hasHole(canvas) {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 127) return true;
  return false;
}

async function run() {
  message("");
  const mask = cropCanvas(state.mask);
  if (!hasHole(mask)) { message("Paint the area to fill in first (the mask inside the square is empty)."); return; }
  const button = $("run");
  button.disabled = true; button.textContent = "Working...";
  try {
    const body = { image: cropCanvas(state.photo).toDataURL("image/png"), mask: mask.toDataURL("image/png"), model: $("model").value, format: "png", align: "auto" };
    if (state.reference) body.reference = state.reference;
    const data = await api("v1/inpaint", body);
    const crop = await loadImage(data.image);
    state.result = canvasOf(state.photo.width, state.photo.height, state.photo);
    state.result.getContext("2d").drawImage(crop, state.box.x, state.box.y);
    showResult(data);
  } catch (error) {
    message(error.message);
  } finally {
    button.disabled = false; button.textContent = "Inpaint";
  }
}

function showResult(data) {
  for (const [id, source] of [["before", state.photo], ["after", state.result]]) {
    const canvas = $(id);
    canvas.width = source.width; canvas.height = source.height;
    canvas.getContext("2d").drawImage(source, 0, 0);
  }
  $("timing").textContent = `${data.model}: ${data.ms} ms on the server`;
  state.result.toBlob((blob) => {
    const link = $("download");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.dataset.ready = "1";
  }, "image/png");
  $("step-result").hidden = false;
  $("step-result").scrollIntoView({ behavior: "smooth" });
}

function setupControls() {
  $("photo").addEventListener("change", (event) => openPhoto(event.target.files[0]));
  $("reference").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    state.reference = file ? await readFile(file) : null;
    // A reference photo is of no use to a model without a reference branch: offer the server's reference default.
    const models = state.models;
    const chosen = models && models.models.find((model) => model.name === $("model").value);
    if (state.reference && chosen && !chosen.reference && models.reference_default) {
      $("model").value = models.reference_default;
      message(`Using ${models.reference_default}, which uses the reference photo.`, "info");
    }
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault(); drop.classList.remove("over");
    openPhoto(event.dataTransfer.files[0]);
  });
  for (const tool of ["brush", "eraser"]) {
    $(tool).addEventListener("click", () => {
      state.tool = tool;
      $("brush").classList.toggle("active", tool === "brush"); $("eraser").classList.toggle("active", tool === "eraser");
    });
  }
  $("undo").addEventListener("click", () => { if (state.ops.length) { state.undone.push(state.ops.pop()); replay(); } });
  $("redo").addEventListener("click", () => { if (state.undone.length) { state.ops.push(state.undone.pop()); replay(); } });
  $("clear").addEventListener("click", () => addOp({ type: "clear" }));
  for (const part of ["eyes", "mouth"]) {
    $(`preset-${part}`).addEventListener("click", () => { if (state.parts[part]) addOp({ type: "preset", mode: "paint", canvas: state.parts[part] }); });
  }
  $("split").addEventListener("input", (event) => { $("after").style.clipPath = `inset(0 ${100 - event.target.value}% 0 0)`; });
  $("run").addEventListener("click", run);
}

// For tests and scripts: the full-size mask and result as PNG data URLs.
window.faceinpaint = {
  state,
  maskDataURL: () => state.mask && state.mask.toDataURL("image/png"),
  resultDataURL: () => state.result && state.result.toDataURL("image/png"),
};

setupControls();
setupEditor();
loadModels();
