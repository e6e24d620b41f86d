// runyard dashboard: small enhancements over server-rendered pages.
// Every action works without this script; it adds confirmations, copy buttons,
// select-all, and live updates through the daemon's event stream.

const main = document.getElementById("main");
const offline = document.getElementById("offline");

// Confirm before destructive forms (stop, revoke). On a form with several
// buttons, data-confirm-action names the one that asks.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  const only = form.dataset.confirmAction;
  const submitter = event.submitter;
  if (only && (!submitter || submitter.value !== only)) return;
  if (!window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const note = button.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(source.textContent);
    if (note) note.textContent = "Copied.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (note) note.textContent = "Selected: press Ctrl+C to copy.";
  }
});

document.addEventListener("change", (event) => {
  if (event.target.id !== "select-all") return;
  for (const box of document.querySelectorAll('input[name="run"]')) {
    box.checked = event.target.checked;
  }
});

export function showOffline(down) {
  if (offline) offline.hidden = !down;
}

// Live pages: refresh <main> from the server when a run starts or ends,
// unless the person is in the middle of something (typing, a selection).
function busy() {
  const active = document.activeElement;
  if (active && main.contains(active) && active.matches("input, select, textarea")) return true;
  return document.querySelector('input[name="run"]:checked') !== null;
}

let timer = null;
let pending = false;

async function refresh() {
  timer = null;
  if (busy()) {
    pending = true;
    return;
  }
  pending = false;
  try {
    const response = await fetch(window.location.href, {
      headers: { "X-Runyard-Fragment": "1" },
      credentials: "same-origin",
    });
    if (response.redirected || response.status === 401) {
      window.location.reload();
      return;
    }
    if (!response.ok) return;
    const html = await response.text();
    const parsed = new DOMParser().parseFromString(`<main>${html}</main>`, "text/html");
    const fresh = parsed.body.firstElementChild;
    // A flash (what the last action did) is shown once by the server: keep it
    // on screen through refreshes until the person leaves the page.
    if (!fresh.querySelector("[data-flash]")) {
      fresh.prepend(...main.querySelectorAll(":scope > [data-flash]"));
    }
    main.replaceChildren(...fresh.childNodes);
    main.dataset.refreshed = String(Number(main.dataset.refreshed || "0") + 1);
    showOffline(false);
  } catch {
    showOffline(true);
  }
}

function schedule() {
  if (timer === null) timer = window.setTimeout(refresh, 400);
}

document.addEventListener("focusout", () => {
  if (pending) schedule();
});

// Pages whose state changes without a run event (services: probes, restarts)
// poll: the same fragment refresh, every data-every ms while the tab is shown.
if (main && main.dataset.live === "poll") {
  const every = Math.max(500, Number(main.dataset.every) || 2000);
  window.setInterval(() => {
    if (!document.hidden) schedule();
  }, every);
}

if (main && main.dataset.live === "events") {
  const source = new EventSource("/events/live");
  for (const kind of ["run.created", "run.started", "run.ended"]) {
    source.addEventListener(kind, schedule);
  }
  source.addEventListener("open", () => showOffline(false));
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.OPEN) showOffline(true);
  });
}
