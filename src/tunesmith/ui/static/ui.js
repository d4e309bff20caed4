// tunesmith ui: the only script, also inlined into report.html. Filters submit when changed (or, in
// report.html, pick from the selections the page carries); a training run's curves follow metrics.jsonl.
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

// Break-even sliders: each range drives a number box (the form field, so a typed value beyond the
// slider's range still counts); any change asks the server for the new result (debounced) and swaps
// it in, so the numbers always come from tunesmith.plan.breakeven.
document.querySelectorAll("form[data-live]").forEach((form) => {
  const target = document.getElementById(form.dataset.target);
  let timer = null;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = new URLSearchParams(new FormData(form)).toString();
      const r = await fetch(form.dataset.live + "?" + query, { cache: "no-store" });
      if (r.ok) target.innerHTML = (await r.json()).html;
    }, 150);
  };
  form.querySelectorAll("input[data-mirror]").forEach((range) => {
    const box = document.getElementById(range.dataset.mirror);
    range.addEventListener("input", () => { box.value = range.value; refresh(); });
    box.addEventListener("input", () => { range.value = box.value; refresh(); });
  });
});

// report.html has no server: its filters look their answer up in the selections the page carries
// (tunesmith.ui.examples.every_selection wrote them) and show those examples in that order.
const selections = document.getElementById("example-selections");
const offline = document.querySelector("form[data-static]");
if (selections && offline) {
  const table = JSON.parse(selections.textContent);
  const list = document.getElementById("example-list");
  const articles = Array.from(list.querySelectorAll("article.example"));
  const apply = () => {
    const f = new FormData(offline);
    const system = f.get("system") || "";
    const order = table[[system, f.get("rule") || "", f.get("differ") ? "1" : "0", f.get("sort") || "id"].join("|")] || [];
    const picked = new Set(order);
    articles.forEach((a, i) => { a.hidden = !picked.has(i); });
    order.forEach((i) => list.appendChild(articles[i]));
    list.querySelectorAll(".col").forEach((c) => { c.hidden = system !== "" && c.dataset.system !== system; });
    document.getElementById("example-matches").textContent = String(order.length);
    document.getElementById("no-examples").hidden = order.length > 0;
  };
  offline.addEventListener("change", apply);
  // a reset event comes before the fields change, so the button resets and applies in one step: the page
  // shows every example when the click returns, not a moment later
  offline.querySelectorAll("button[type=reset]").forEach((b) => b.addEventListener("click", (e) => {
    e.preventDefault();
    offline.reset();
    apply();
  }));
  document.querySelectorAll("a[data-rule]").forEach((a) => a.addEventListener("click", () => {
    offline.elements.rule.value = a.dataset.rule;
    apply();
  }));
}
