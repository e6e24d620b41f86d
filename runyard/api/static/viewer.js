// The run viewer: loads the run from `<id>/state`, follows `<id>/log` (SSE).
//
// Everything the run holds (log lines, data, description, names) is untrusted:
// it only ever reaches the page through textContent, never as HTML.
"use strict";

(() => {
  const POLL_MS = 2000; // output data and status are refreshed this often until the run ends
  const TICK_MS = 1000;
  // A log line's `stream`: the process's stdout or stderr, or a note from runyard itself.
  const STREAM_CLASSES = { out: "stdout", err: "stderr", sys: "system" };

  const params = new URLSearchParams(window.location.search);
  const password = params.get("password") || "";
  const host = params.get("host") || "";
  const runId = decodeURIComponent(window.location.pathname.split("/").pop());
  // Relative URLs: the page lives at <prefix>/view/<id>, the v3 API at <prefix>/api/v3.
  const runPath = encodeURIComponent(runId);
  const secret = "?password=" + encodeURIComponent(password);
  const STATE_URL = runPath + "/state" + secret;
  const LOG_URL = runPath + "/log" + secret;
  const STOP_URL = "../api/v3/stop";

  const $ = (id) => document.getElementById(id);
  const el = {
    automation: $("automation"),
    badge: $("badge"),
    queued: $("queued"),
    stop: $("stop"),
    notice: $("notice"),
    created: $("created"),
    started: $("started"),
    ended: $("ended"),
    duration: $("duration"),
    outcome: $("outcome"),
    description: $("description"),
    input: $("input"),
    output: $("output"),
    log: $("log"),
    logState: $("log-state"),
  };

  let run = null; // the last state seen: /state's JSON, updated by the log's `done`
  let shownInput = null; // JSON of the tables on screen, to redraw only on change
  let shownOutput = null;
  let polling = true; // until the run is seen ended
  let pollTimer = null;
  let stream = null;

  const isEnded = () => run !== null && run.phase === "ended";

  // ----- formatting ---------------------------------------------------------

  function formatTime(iso) {
    return iso ? new Date(iso).toLocaleString() : "–";
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined || ms < 0) {
      return "–";
    }
    const seconds = ms / 1000;
    if (seconds < 60) {
      return seconds.toFixed(1) + " s";
    }
    const whole = Math.floor(seconds);
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = whole % 60;
    return (h ? h + " h " : "") + m + " min " + s + " s";
  }

  function currentDuration() {
    if (run.duration_ms !== null && run.duration_ms !== undefined) {
      return run.duration_ms;
    }
    if (run.start_at && !isEnded()) {
      return Date.now() - new Date(run.start_at).getTime();
    }
    return null;
  }

  function notify(text) {
    el.notice.textContent = text;
    el.notice.hidden = !text;
  }

  // ----- rendering ------------------------------------------------------------

  function tableOf(rows) {
    const table = document.createElement("table");
    rows.forEach((row, index) => {
      const tr = document.createElement("tr");
      for (const cell of row) {
        // The first row of a sheet holds the column names.
        const td = document.createElement(index === 0 ? "th" : "td");
        td.textContent = String(cell);
        tr.appendChild(td);
      }
      table.appendChild(tr);
    });
    return table;
  }

  function emptyNote(text) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = text;
    return p;
  }

  function renderInput(tables) {
    const json = JSON.stringify(tables);
    if (json === shownInput) {
      return;
    }
    shownInput = json;
    el.input.replaceChildren();
    if (tables.length === 0) {
      el.input.appendChild(emptyNote("No input data."));
    }
    for (const rows of tables) {
      el.input.appendChild(tableOf(rows));
    }
  }

  function renderOutput(byToken) {
    const json = JSON.stringify(byToken);
    if (json === shownOutput) {
      return;
    }
    shownOutput = json;
    el.output.replaceChildren();
    const tokens = Object.keys(byToken).sort();
    if (tokens.length === 0) {
      el.output.appendChild(emptyNote(isEnded() ? "No output data." : "No output data yet."));
    }
    for (const token of tokens) {
      const heading = document.createElement("h3");
      heading.textContent = token;
      el.output.append(heading, tableOf(byToken[token]));
    }
  }

  function renderTiming() {
    el.created.textContent = formatTime(run.created_at);
    el.started.textContent = formatTime(run.start_at);
    el.ended.textContent = formatTime(run.end_at);
    el.duration.textContent = formatDuration(currentDuration());
    el.outcome.textContent = isEnded()
      ? (run.end_reason || "ended") + " (exit code " + run.exit_code + ")"
      : "–";
  }

  function render() {
    el.automation.textContent = run.automation;
    document.title = run.automation + " · " + run.status + " · runyard";
    el.badge.textContent = run.status;
    el.badge.className = "badge " + run.status.toLowerCase();
    el.queued.hidden = run.phase !== "pending";
    el.stop.disabled = isEnded();
    el.description.textContent = run.description;
    renderTiming();
    renderInput(run.input_data);
    renderOutput(run.output_data);
  }

  // ----- state polling --------------------------------------------------------

  async function refresh() {
    let response;
    try {
      response = await fetch(STATE_URL, { cache: "no-store" });
    } catch (error) {
      notify("Cannot reach runyard; retrying…");
      return;
    }
    if (response.status === 404) {
      notify("Run not found.");
      stopPolling();
      return;
    }
    if (!response.ok) {
      notify("runyard answered " + response.status + "; retrying…");
      return;
    }
    const state = await response.json();
    // A `done` seen on the log stream wins over a poll that left before it.
    if (!(isEnded() && state.phase !== "ended")) {
      run = state;
      render();
    }
    if (el.notice.textContent.endsWith("retrying…")) {
      notify("");
    }
  }

  async function poll() {
    await refresh();
    if (isEnded()) {
      stopPolling();
    }
    if (polling) {
      pollTimer = window.setTimeout(poll, POLL_MS);
    }
  }

  function stopPolling() {
    polling = false;
    window.clearTimeout(pollTimer);
  }

  // ----- the log -------------------------------------------------------------------

  function appendLine(line) {
    const box = el.log;
    // Follow the tail only while the reader is at it: scrolling up to read stays put.
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const row = document.createElement("div");
    row.className = "line " + (STREAM_CLASSES[line.stream] || "stdout");
    row.dataset.n = String(line.n);
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = line.at ? new Date(line.at).toLocaleTimeString() : "";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    row.append(at, text);
    box.appendChild(row);
    if (atBottom) {
      box.scrollTop = box.scrollHeight;
    }
  }

  function follow() {
    stream = new EventSource(LOG_URL);
    stream.addEventListener("open", () => {
      el.logState.textContent = "Following the log live.";
    });
    stream.addEventListener("line", (message) => {
      appendLine(JSON.parse(message.data));
    });
    stream.addEventListener("done", (message) => {
      stream.close();
      const ended = JSON.parse(message.data); // the run as the REST API shows it
      const status = ended.end_reason === "success" ? "Success" : "Failure";
      run = Object.assign({}, run || {}, {
        status: status,
        phase: ended.status,
        end_reason: ended.end_reason || null,
        exit_code: ended.exit_code,
        start_at: ended.start_at || null,
        end_at: ended.end_at || null,
        duration_ms: ended.duration_ms ?? null,
      });
      el.logState.textContent = "The run has ended; this is the whole log.";
      if (run.automation !== undefined) {
        render();
      }
      stopPolling();
      refresh(); // once more, for the output data the run left behind
    });
    stream.addEventListener("error", () => {
      // EventSource reconnects by itself (resuming after the last line) unless closed.
      el.logState.textContent =
        stream.readyState === EventSource.CLOSED
          ? "The log stream closed; reload the page to follow it again."
          : "Log connection lost; reconnecting…";
    });
  }

  // ----- stop -----------------------------------------------------------------------

  function stopPid() {
    // As v3 clients do: characters 2..4 of the second `-` part of `host`.
    const part = host.split("-")[1] || "";
    return part.substring(2, 4);
  }

  async function stopRun() {
    el.stop.disabled = true;
    notify("Stopping the run…");
    let body = null;
    try {
      const response = await fetch(STOP_URL, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ pid: stopPid(), pw: password }),
      });
      body = await response.json();
    } catch (error) {
      body = { message: "Cannot reach runyard." };
    }
    if (body && body.stopped) {
      notify("Stop requested; the run is ending.");
    } else {
      notify("Could not stop the run: " + ((body && body.message) || "unknown error"));
      el.stop.disabled = isEnded();
    }
  }

  // ----- start ------------------------------------------------------------------------

  el.stop.addEventListener("click", stopRun);
  window.setInterval(() => {
    if (run !== null && !isEnded()) {
      renderTiming();
    }
  }, TICK_MS);
  poll();
  follow();
})();
