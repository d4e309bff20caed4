// tunesmith ui: the only script. Filters submit when changed; a training run's curves follow metrics.jsonl.
"use strict";

document.querySelectorAll("form[data-autosubmit]").forEach((form) => {
  form.querySelectorAll("select, input[type=checkbox]").forEach((el) =>
    el.addEventListener("change", () => form.requestSubmit()));
});

// Poll the small curves endpoint every second while the run trains (a new row shows within ~1 s),
// redraw only when the row count or status changed, and stop once the run is no longer running.
const curves = document.getElementById("curves");
if (curves && curves.dataset.status === "running") {
  const body = document.getElementById("curves-body");
  const note = document.getElementById("curves-note");
  const tick = async () => {
    try {
      const r = await fetch(curves.dataset.src, { cache: "no-store" });
      if (r.ok) {
        const data = await r.json();
        if (String(data.rows) !== curves.dataset.rows || data.status !== curves.dataset.status) {
          body.innerHTML = data.html;
          curves.dataset.rows = String(data.rows);
          curves.dataset.status = data.status;
          note.textContent = data.rows + " logged rows" + (data.status === "running" ? " · following metrics.jsonl live" : "");
        }
        if (data.status !== "running") return;
      }
    } catch (e) {
      note.textContent = "lost contact with the server; retrying";
    }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}
