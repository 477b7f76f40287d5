// The pixelagent page: upload or pick an image, ask turn by turn, see each turn's masks.
// Plain DOM, no build step and nothing fetched from outside this server. Every text that
// comes from a user or the model goes in with textContent, never as HTML.
"use strict";

const config = window.PIXELAGENT || { palette: ["#ff4040"] };
const $ = (id) => document.getElementById(id);
const state = { session: null, imageUrl: null, busy: false, turns: [] };

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(message) { $("error").textContent = message || ""; }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

async function waitForModel() {
  for (;;) {
    try {
      const response = await fetch("/health");
      const health = await response.json();
      if (response.ok) { $("status").textContent = `model: ${health.preset}`; return; }
      $("status").textContent = health.status === "failed" ? `the model failed to load: ${health.error}` : "loading the model…";
      if (health.status === "failed") return;
    } catch (_) { $("status").textContent = "cannot reach the server"; }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function loadSamples() {
  let samples = [];
  try { samples = await api("/v1/samples"); } catch (_) { return; }
  const box = $("samples");
  if (samples.length) box.append(element("span", { class: "meta", textContent: "or pick one:" }));
  for (const sample of samples) {
    const button = element("button", { type: "button", title: sample.name, className: "sample" },
      element("img", { src: sample.url, alt: sample.name }));
    button.dataset.name = sample.name;
    button.addEventListener("click", async () => {
      const blob = await (await fetch(sample.url)).blob();
      await openSession(new File([blob], `${sample.name}.png`, { type: "image/png" }), sample.questions);
    });
    box.append(button);
  }
}

async function openSession(file, suggestions = []) {
  showError("");
  if (state.session) fetch(`/v1/sessions/${state.session.id}`, { method: "DELETE" }).catch(() => {});
  const form = new FormData();
  form.append("image", file, file.name || "image");
  setBusy(true);
  try {
    state.session = await api("/v1/sessions", { method: "POST", body: form });
  } catch (error) {
    state.session = null;
    showError(error.message);
    setBusy(false);
    return;
  }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(file);
  state.turns = [];
  const [height, width] = state.session.image_size;
  $("session-info").textContent = `${file.name || "image"}: ${width}×${height} px`;
  $("log").replaceChildren();
  $("timeline").replaceChildren(element("li", { class: "empty", textContent: "no focus yet" }));
  $("legend").replaceChildren();
  $("downloads").hidden = true;
  showImage(state.imageUrl);
  showSuggestions(suggestions);
  setBusy(false);
  $("question").focus();
}

function showImage(url) {
  $("view").src = url;
  $("view").hidden = false;
  $("placeholder").hidden = true;
}

function showSuggestions(questions) {
  $("suggestions").replaceChildren(...questions.map((question) => {
    const button = element("button", { type: "button", textContent: question });
    button.addEventListener("click", () => { $("question").value = question; $("question").focus(); });
    return button;
  }));
}

function setBusy(busy) {
  state.busy = busy;
  const ready = Boolean(state.session) && !busy;
  $("question").disabled = !ready;
  $("ask").disabled = !ready;
  $("ask").textContent = busy ? "…" : "Ask";
}

function colour(index) { return config.palette[index % config.palette.length]; }

function overlayUrl(turn) { return `/v1/sessions/${state.session.id}/turns/${turn.turn}/overlay.png`; }

async function ask(question) {
  showError("");
  setBusy(true);
  try {
    const turn = await api(`/v1/sessions/${state.session.id}/ask`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
    });
    state.turns.push(turn);
    addTurn(turn);
    if (turn.intent) addFocus(turn.intent);
    if (turn.targets.length) selectTurn(turn);
    $("question").value = "";
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy(false);
    $("question").focus();
  }
}

function addTurn(turn) {
  const text = element("div", {},
    element("div", { class: "you", textContent: `you: ${turn.question}` }),
    element("div", { class: "agent", textContent: turn.text }));
  if (turn.targets.length) {
    const phrases = turn.targets.map((t) => `${t.phrase} (${t.granularity}, ${t.area} px)`).join("; ");
    text.append(element("div", { class: "meta", textContent: `→ ${phrases}` }));
  } else {
    text.append(element("div", { class: "meta", textContent: turn.reason ? `no target: ${turn.reason}` : "no target" }));
  }
  for (const note of turn.notes) text.append(element("div", { class: "note", textContent: `note: ${note}` }));
  const row = element("div", { class: "turn" }, text);
  row.dataset.turn = turn.turn;
  if (turn.targets.length) {
    const thumb = element("img", { class: "overlay", src: overlayUrl(turn), alt: `turn ${turn.turn} overlay` });
    thumb.addEventListener("click", () => selectTurn(turn));
    row.append(thumb);
  }
  $("log").append(row);
  row.scrollIntoView({ block: "nearest" });
}

function addFocus(focus) {
  const timeline = $("timeline");
  timeline.querySelector(".empty")?.remove();
  const label = `turn ${focus.turn}: ${focus.relation} · ${focus.granularity}`;
  const item = element("li", { class: focus.relation, textContent: label, title: focus.phrases.join("; ") });
  timeline.append(item);
}

function selectTurn(turn) {
  showImage(overlayUrl(turn));
  $("legend").replaceChildren(...turn.targets.map((target, index) => element("li", {},
    element("span", { class: "swatch", style: { background: colour(index) } }),
    element("span", { class: "phrase", textContent: target.phrase }),
    element("span", { class: "granularity", textContent: target.granularity }),
    element("span", { class: "meta", textContent: `${target.area} px, score ${target.score.toFixed(2)}` }))));
  $("download-turn").textContent = String(turn.turn);
  $("download-mask").href = `/v1/sessions/${state.session.id}/turns/${turn.turn}/mask.png`;
  $("download-mask").download = `turn${String(turn.turn).padStart(2, "0")}_mask.png`;
  const rle = turn.targets.map((t) => ({ phrase: t.phrase, granularity: t.granularity, bbox: t.bbox, mask: t.mask }));
  const link = $("download-rle");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([JSON.stringify(rle, null, 2)], { type: "application/json" }));
  link.download = `turn${String(turn.turn).padStart(2, "0")}_rle.json`;
  $("downloads").hidden = false;
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) openSession(file);
});
$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (question && state.session && !state.busy) ask(question);
});
waitForModel();
loadSamples();
