"""The rating page: one self-contained HTML document (no external scripts, fonts or CDNs).

The page holds no study state: it asks the server for the next item and posts each score, so a
reload, a closed tab or a restarted server resumes exactly where the rater stopped. The rater's
name is remembered in localStorage so that coming back is one click.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image quality rating</title>
<style>
  body { margin: 0; background: #3a3a3a; color: #eee; font: 15px/1.4 system-ui, sans-serif; }
  .screen { display: none; } .screen.on { display: block; }
  #start, #done { max-width: 34em; margin: 10vh auto; padding: 0 1em; }
  input, button { font: inherit; }
  #name { padding: .4em; width: 16em; }
  button { padding: .45em 1em; border-radius: 4px; border: 1px solid #888; background: #555;
           color: #eee; cursor: pointer; }
  button:disabled { opacity: .35; cursor: default; }
  header { display: flex; gap: 1em; align-items: center; padding: .5em 1em; background: #2a2a2a; }
  #bar { flex: 1; height: 8px; background: #555; border-radius: 4px; overflow: hidden; }
  #fill { height: 100%; width: 0; background: #6c6; }
  #banner { text-align: center; padding: .4em; min-height: 1.4em; }
  #banner.cal { background: #554; color: #ffd; }
  #stage { display: flex; justify-content: center; align-items: center;
           height: calc(100vh - 11em); }
  #img { max-width: 96vw; max-height: 100%; object-fit: contain; }
  #scores { display: flex; justify-content: center; gap: .6em; padding: .6em; }
  #scores button { min-width: 7.5em; }
  #scores button b { display: block; font-size: 1.3em; }
  #msg { color: #f99; min-height: 1.4em; }
</style>
</head>
<body>
<div id="start" class="screen on">
  <h1>Image quality rating</h1>
  <p>You will see a series of images, one at a time. Rate the quality of each image from
  <b>1 (bad)</b> to <b>5 (excellent)</b> with the buttons or the keys <b>1</b>&ndash;<b>5</b>.
  The first few images are calibration examples whose score is given.</p>
  <p>You can stop at any time: your ratings are saved as you go. Enter the same name later to
  continue where you left off.</p>
  <p><label>Your name: <input id="name" maxlength="40" autocomplete="off"></label>
  <button id="go">Start</button></p>
  <p id="msg"></p>
</div>
<div id="rate" class="screen">
  <header><span id="who"></span><span id="count"></span><div id="bar"><div id="fill"></div></div>
  <button id="stop">Stop (continue later)</button></header>
  <div id="banner"></div>
  <div id="stage"><img id="img" alt="image to rate"></div>
  <div id="scores"></div>
</div>
<div id="done" class="screen">
  <h1>Thank you!</h1>
  <p id="summary"></p>
  <button id="back">Back to start</button>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const LABELS = ["", "bad", "poor", "fair", "good", "excellent"];
let rater = null, item = null, shownAt = 0, busy = false, ready = false, visit = 0;

for (let s = 1; s <= 5; s++) {
  const b = document.createElement("button");
  b.id = "score" + s; b.innerHTML = "<b>" + s + "</b>" + LABELS[s];
  b.addEventListener("click", () => rate(s));
  $("scores").appendChild(b);
}

function screen(name) {
  for (const s of document.querySelectorAll(".screen")) s.classList.toggle("on", s.id === name);
}

async function api(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function setButtons() {
  for (let s = 1; s <= 5; s++) {
    const anchored = item && item.anchor !== null && item.anchor !== s;
    $("score" + s).disabled = !ready || busy || !item || anchored;
  }
}

function show(state) {
  item = state.item;
  if (!item) {
    $("summary").textContent = "You rated all " + state.total + " images. You can close this page.";
    screen("done");
    return;
  }
  screen("rate");
  $("who").textContent = state.rater;
  const banner = $("banner");
  if (item.phase === "calibration") {
    banner.className = "cal";
    banner.textContent = "Calibration " + (state.calibrated + 1) + " of " + state.calibration +
      ": this image is an example of score " + item.anchor + " (" + item.anchor_label +
      "). Press " + item.anchor + " to continue.";
    $("count").textContent = "calibration";
  } else {
    banner.className = "";
    banner.textContent = "How good is the quality of this image?";
    $("count").textContent = "image " + (state.done + 1) + " of " + state.total;
  }
  $("fill").style.width = (100 * state.done / Math.max(1, state.total)) + "%";
  ready = false;
  setButtons();
  const img = $("img");
  img.onload = () => { ready = true; shownAt = performance.now(); setButtons(); };
  img.onerror = () => { $("banner").textContent = "Could not load the image; reload the page."; };
  img.src = "/img/" + item.id;
  if (state.prefetch) new Image().src = "/img/" + state.prefetch;
}

async function rate(score) {
  if (!item || busy || !ready || (item.anchor !== null && item.anchor !== score)) return;
  busy = true; setButtons();
  const thisVisit = visit;
  try {
    const body = JSON.stringify({rater: rater, item: item.id, score: score,
                                 elapsed_ms: Math.round(performance.now() - shownAt)});
    const state = await api("/api/rate", {method: "POST", body: body,
                                          headers: {"Content-Type": "application/json"}});
    busy = false;
    if (thisVisit === visit) show(state);  // not if the rater pressed Stop meanwhile
  } catch (e) {
    busy = false; setButtons();
    $("banner").textContent = "Not saved (" + e.message + "); please try again.";
  }
}

async function start() {
  const name = $("name").value.trim();
  if (!name) { $("msg").textContent = "Please enter your name."; return; }
  try {
    const state = await api("/api/next?rater=" + encodeURIComponent(name));
    rater = state.rater;
    localStorage.setItem("plfw-mos-rater", rater);
    $("msg").textContent = "";
    show(state);
  } catch (e) {
    $("msg").textContent = e.message;
  }
}

$("go").addEventListener("click", start);
$("name").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
$("stop").addEventListener("click", () => {
  item = null; visit++;
  $("msg").textContent = "Your ratings are saved. Enter the same name to continue.";
  screen("start");
});
$("back").addEventListener("click", () => screen("start"));
document.addEventListener("keydown", (e) => {
  if ($("rate").classList.contains("on") && e.key >= "1" && e.key <= "5") rate(Number(e.key));
});
$("name").value = localStorage.getItem("plfw-mos-rater") || "";
</script>
</body>
</html>
"""
