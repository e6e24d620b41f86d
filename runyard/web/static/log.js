// The run page's log: follows the run's log stream, renders ANSI colours,
// keeps at most MAX_LINES lines in the page, searches and jumps to the end.
import { showOffline } from "/ui/static/dashboard.js";

const MAX_LINES = 2000;
// More new lines than this at one update (a flood): only the newest are drawn.
const FLOOD_LINES = 500;
const box = document.getElementById("log");
const state = document.getElementById("log-state");
const search = document.getElementById("log-search");
const matches = document.getElementById("log-matches");
const endButton = document.getElementById("log-end");

const FG = new Set([30, 31, 32, 33, 34, 35, 36, 37, 90, 91, 92, 93, 94, 95, 96, 97]);
const BG = new Set([40, 41, 42, 43, 44, 45, 46, 47]);
// CSI sequences of any kind; only SGR (ending in m) changes how text looks.
const CSI = /\x1b\[([0-9;?]*)([A-Za-z])/g;

function ansiSpans(text, style) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(CSI)) {
    if (match.index > last) parts.push([text.slice(last, match.index), { ...style }]);
    last = match.index + match[0].length;
    if (match[2] !== "m") continue;
    const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) { style.bold = style.dim = style.italic = style.underline = false; style.fg = style.bg = null; }
      else if (code === 1) style.bold = true;
      else if (code === 2) style.dim = true;
      else if (code === 3) style.italic = true;
      else if (code === 4) style.underline = true;
      else if (code === 22) style.bold = style.dim = false;
      else if (code === 23) style.italic = false;
      else if (code === 24) style.underline = false;
      else if (FG.has(code)) style.fg = code;
      else if (code === 39) style.fg = null;
      else if (BG.has(code)) style.bg = code;
      else if (code === 49) style.bg = null;
      else if (code === 38 || code === 48) {
        // 256-colour and true colour: mapped to the nearest basic colour.
        const kind = codes[i + 1];
        const basic = kind === 5 ? codes[i + 2] : null;
        i += kind === 5 ? 2 : kind === 2 ? 4 : 0;
        if (basic !== null && basic !== undefined && basic < 16) {
          const mapped = (basic < 8 ? 30 : 82) + basic;
          if (code === 38) style.fg = mapped;
          else if (basic < 8) style.bg = 40 + basic;
        }
      }
    }
  }
  if (last < text.length) parts.push([text.slice(last), { ...style }]);
  return parts;
}

function classes(style) {
  const names = [];
  if (style.bold) names.push("ansi-bold");
  if (style.dim) names.push("ansi-dim");
  if (style.italic) names.push("ansi-italic");
  if (style.underline) names.push("ansi-underline");
  if (style.fg) names.push(`fg-${style.fg}`);
  if (style.bg) names.push(`bg-${style.bg}`);
  return names.join(" ");
}

let queue = [];
let scheduled = false;
let shown = box.querySelectorAll(".line").length; // line rows in the box now
let flushed = false; // the first update (the log so far) is done
const live = box.dataset.active === "true"; // the run was running when the page opened
// The server starts the stream at the last MAX_LINES lines of a long log.
let dropped = Number(box.dataset.from || "0");
let note = null;
let follow = true;
let finished = false;
let query = "";
const style = { bold: false, dim: false, italic: false, underline: false, fg: null, bg: null };

function render(line) {
  const row = document.createElement("div");
  row.className = `line ${line.stream === "err" ? "stderr" : ""}`;
  row.dataset.n = line.n;
  // Colours carry over lines, as in a terminal; each line resets on its own
  // only when the program says so.
  for (const [text, look] of ansiSpans(line.text, style)) {
    const cls = classes(look);
    if (cls) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      row.append(span);
    } else {
      row.append(document.createTextNode(text));
    }
  }
  if (query && row.textContent.toLowerCase().includes(query)) row.classList.add("match");
  return row;
}

function flush() {
  scheduled = false;
  if (!queue.length) return;
  let batch = queue;
  queue = [];
  if (batch.length > MAX_LINES) {
    dropped += batch.length - MAX_LINES;
    batch = batch.slice(-MAX_LINES);
  }
  if (live && flushed && batch.length > FLOOD_LINES) {
    // A running flood (not the log so far, which the first update draws
    // whole): show its newest lines only, and nothing older, so what the
    // page shows stays one unbroken stretch of the log.
    dropped += shown + batch.length - FLOOD_LINES;
    batch = batch.slice(-FLOOD_LINES);
    let row = note ? note.nextElementSibling : box.firstElementChild;
    while (row) {
      const next = row.nextElementSibling;
      row.remove();
      row = next;
    }
    shown = 0;
  }
  const fragment = document.createDocumentFragment();
  for (const line of batch) fragment.append(render(line));
  box.append(fragment);
  shown += batch.length;
  let excess = shown - MAX_LINES;
  if (excess > 0) {
    dropped += excess;
    shown -= excess;
    let row = note ? note.nextElementSibling : box.firstElementChild;
    while (excess-- > 0 && row) {
      const next = row.nextElementSibling;
      row.remove();
      row = next;
    }
  }
  flushed = true;
  showDropped();
  if (query) countMatches();
  if (follow) box.scrollTop = box.scrollHeight;
}

function showDropped() {
  if (dropped > 0) {
    if (!note) {
      note = document.createElement("p");
      note.className = "note";
      box.prepend(note);
    }
    note.textContent = `${dropped} earlier lines are not shown here: download the whole log for them.`;
  }
}
showDropped();

// Lines are added a few times a second, not once per line or per frame: a
// run printing thousands of lines a second then costs the page a handful of
// DOM updates and layouts a second, and the page stays responsive.
const FLUSH_MS = 200;

function push(line) {
  queue.push(line);
  if (!scheduled) {
    scheduled = true;
    window.setTimeout(() => window.requestAnimationFrame(flush), FLUSH_MS);
  }
}

function countMatches() {
  const found = box.querySelectorAll(".line.match").length;
  matches.textContent = query ? `${found} matching line${found === 1 ? "" : "s"} shown` : "";
}

search.addEventListener("input", () => {
  query = search.value.trim().toLowerCase();
  for (const row of box.querySelectorAll(".line")) {
    row.classList.toggle("match", Boolean(query) && row.textContent.toLowerCase().includes(query));
  }
  countMatches();
});
search.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const hits = [...box.querySelectorAll(".line.match")];
  if (!hits.length) return;
  const current = hits.findIndex((row) => row.classList.contains("current"));
  hits.forEach((row) => row.classList.remove("current"));
  const next = hits[(current + 1) % hits.length];
  next.classList.add("current");
  follow = false;
  next.scrollIntoView({ block: "center" });
});

box.addEventListener("scroll", () => {
  follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
});
endButton.addEventListener("click", () => {
  follow = true;
  box.scrollTop = box.scrollHeight;
});

async function refreshFacts() {
  // The run ended: the page's facts (status, exit code, output) are stale.
  const response = await fetch(window.location.href, { headers: { "X-Runyard-Fragment": "1" } });
  if (!response.ok) return;
  const parsed = new DOMParser().parseFromString(`<main>${await response.text()}</main>`, "text/html");
  const fresh = parsed.body.firstElementChild;
  for (const id of ["run-state", "facts"]) {
    const old = document.getElementById(id);
    const replacement = fresh.querySelector(`#${id}`);
    if (id === "facts") {
      const section = old && old.closest("section");
      const next = replacement && replacement.closest("section");
      if (section && next) section.replaceWith(next);
    } else if (old && replacement) old.replaceWith(replacement);
  }
  for (const id of ["output-heading"]) {
    const section = document.getElementById(id)?.closest("section");
    const next = fresh.querySelector(`#${id}`)?.closest("section");
    if (section && next) section.replaceWith(next);
  }
  const stop = document.getElementById("stop");
  if (stop) stop.closest("form").remove();
}

const source = new EventSource(
  `/runs/${encodeURIComponent(box.dataset.run)}/log/live?from=${dropped}`,
);
state.textContent = box.dataset.active === "true" ? "Following the log…" : "Loading the log…";
source.addEventListener("open", () => showOffline(false));
source.addEventListener("line", (event) => push(JSON.parse(event.data)));
source.addEventListener("done", async () => {
  finished = true;
  source.close();
  window.requestAnimationFrame(flush);
  state.textContent = "The run has ended; this is its whole log.";
  box.dataset.finished = "true";
  if (box.dataset.active === "true") await refreshFacts();
});
source.addEventListener("error", () => {
  if (finished) return;
  if (source.readyState === EventSource.CLOSED) {
    state.textContent = "The log stream closed.";
  } else {
    state.textContent = "runyard is unreachable — retrying…";
    showOffline(true);
  }
});
