// dejavu's page: listen through the microphone (AudioWorklet → WebSocket /v1/stream, or
// MediaRecorder clips → POST /v1/recognize where AudioWorklet is missing), recognize a dropped
// file, list the catalogue.  A token given as ?token= in the page's URL is sent along.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const CLIP_MS = 6000;            // MediaRecorder fallback: length of each clip sent
const PAGE = 50;                 // catalogue songs per page
const $ = (id) => document.getElementById(id);

let session = null;              // the running capture: {stop()}
let serverError = null;          // the server's last error message, if any

function authHeaders() {
  return TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

function percent(x) {
  return `${Math.round(x * 100)} %`;
}

// ------------------------------------------------------------------ live answers
function showMatch(name, position, confidence) {
  const song = $("song");
  song.textContent = name;
  song.className = "song";
  $("position").textContent = clock(position);
  $("confidence").textContent = percent(confidence);
}

function showNoMatch() {
  const song = $("song");
  song.textContent = "No match";
  song.className = "song nomatch";
  $("position").textContent = "—";
  $("confidence").textContent = "—";
}

function showMessage(text, isError) {
  const mode = $("mode");
  mode.textContent = text;
  mode.className = isError ? "error" : "muted";
}

function addSegment(s) {
  const li = document.createElement("li");
  li.textContent = `${clock(s.start_seconds)}–${clock(s.end_seconds)}  ${s.song_name} ` +
    `(from ${clock(s.offset_seconds)} in the song, ${percent(s.confidence)})`;
  $("timeline").appendChild(li);
}

function handleEvent(e) {
  if (typeof e.time === "number") $("heard").textContent = clock(e.time);
  if (e.event === "match") showMatch(e.song_name, e.position_seconds, e.confidence);
  else if (e.event === "no_match") showNoMatch();
  else if (e.event === "segment") addSegment(e);
  else if (e.event === "error") serverError = `Server: ${e.message}`;
}

// ------------------------------------------------------------------ capture
async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no microphone here (pages need https, or localhost)");
  }
  // Echo cancellation, noise suppression and gain control reshape the spectrum: all off.
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
}

async function streamWithWorklet(stream) {
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "capture-processor");
  const mute = ctx.createGain();
  mute.gain.value = 0;              // the graph must reach the destination to run; nothing is heard
  source.connect(node).connect(mute).connect(ctx.destination);

  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (TOKEN) url.searchParams.set("token", TOKEN);
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({ sample_rate: ctx.sampleRate, format: "f32le" }));
  ws.onmessage = (m) => handleEvent(JSON.parse(m.data));
  ws.onerror = () => showMessage("The connection to the server failed.", true);
  ws.onclose = () => { if (session) stop(serverError || "The server ended the stream."); };
  node.port.onmessage = (m) => { if (ws.readyState === WebSocket.OPEN) ws.send(m.data); };
  showMessage(`Listening (${ctx.sampleRate} Hz, streamed live)…`);
  return {
    stop() {
      node.port.onmessage = null;
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ event: "end" }));
        setTimeout(() => ws.close(), 3000);    // after the last segments arrive
      }
      ctx.close();
    },
  };
}

function recordClips(stream) {
  // Fallback without AudioWorklet: record CLIP_MS clips and upload each one.
  let running = true;
  let recorder = null;
  const next = () => {
    if (!running) return;
    recorder = new MediaRecorder(stream);
    const parts = [];
    recorder.ondataavailable = (e) => parts.push(e.data);
    recorder.onstop = async () => {
      const blob = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
      next();
      try {
        const answer = await recognize(blob);
        const best = answer.results[0];
        if (best) showMatch(best.song_name, best.offset_seconds + CLIP_MS / 1000, best.input_confidence);
        else showNoMatch();
      } catch (err) {
        showMessage(err.message, true);
      }
    };
    recorder.start();
    setTimeout(() => recorder.state === "recording" && recorder.stop(), CLIP_MS);
  };
  next();
  showMessage(`Listening (clips of ${CLIP_MS / 1000} s uploaded)…`);
  return { stop() { running = false; if (recorder && recorder.state === "recording") recorder.stop(); } };
}

async function start() {
  const button = $("listen");
  serverError = null;
  button.disabled = true;
  try {
    const stream = await openMicrophone();
    const capture = window.AudioWorkletNode ? await streamWithWorklet(stream) : recordClips(stream);
    session = {
      stop() {
        capture.stop();
        stream.getTracks().forEach((t) => t.stop());
      },
    };
    button.textContent = "Stop";
    button.classList.add("active");
  } catch (err) {
    showMessage(`Cannot listen: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function stop(note) {
  const current = session;
  session = null;
  if (current) current.stop();
  const button = $("listen");
  button.textContent = "Listen";
  button.classList.remove("active");
  showMessage(note || "Stopped.", Boolean(note));
}

// ------------------------------------------------------------------ files
async function recognize(blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename || "clip");
  const response = await fetch("/v1/recognize", { method: "POST", body: form, headers: authHeaders() });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
  return answer;
}

async function recognizeFile(file) {
  const out = $("file-result");
  out.textContent = `Recognizing ${file.name}…`;
  try {
    const answer = await recognize(file, file.name);
    out.replaceChildren();
    if (!answer.results.length) {
      out.textContent = `${file.name}: no match.`;
      return;
    }
    const list = document.createElement("ol");
    for (const r of answer.results) {
      const li = document.createElement("li");
      li.textContent = `${r.song_name} — from ${clock(r.offset_seconds)} in the song, ` +
        `confidence ${percent(r.input_confidence)}`;
      list.appendChild(li);
    }
    out.append(`${file.name}:`, list);
  } catch (err) {
    out.replaceChildren();
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `${file.name}: ${err.message}`;
    out.appendChild(p);
  }
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) recognizeFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) recognizeFile(e.target.files[0]); });
}

// ------------------------------------------------------------------ catalogue
let shown = 0;

async function loadSongs() {
  const response = await fetch(`/v1/songs?offset=${shown}&limit=${PAGE}`, { headers: authHeaders() });
  const answer = await response.json();
  if (!response.ok) {
    $("songs-total").textContent = `(${answer.message || response.status})`;
    return;
  }
  for (const song of answer.songs) {
    const li = document.createElement("li");
    li.textContent = `${song.song_name} (${clock(song.duration)})`;
    $("songs").appendChild(li);
  }
  shown += answer.songs.length;
  $("songs-total").textContent = `(${answer.total} songs)`;
  $("more").hidden = shown >= answer.total;
}

document.addEventListener("DOMContentLoaded", () => {
  $("listen").addEventListener("click", () => (session ? stop() : start()));
  $("more").addEventListener("click", loadSongs);
  setUpDrop();
  loadSongs();
});
