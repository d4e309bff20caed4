// Playground: stream one prompt to several models at once (OpenAI-style SSE from the mounted serve app),
// show each answer as it arrives, then its rule badges; export the comparison as JSONL test cases.
"use strict";

const form = document.getElementById("play");
const answers = document.getElementById("answers");
const status = document.getElementById("play-status");
const exportButton = document.getElementById("export");
let last = null; // {messages, results: {model: answer}}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function streamOne(model, messages, maxTokens, col) {
  const out = col.querySelector("pre");
  const r = await fetch(form.dataset.endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages, stream: true, max_tokens: maxTokens }),
  });
  if (!r.ok) {
    const err = await r.json().catch(() => ({}));
    throw new Error((err.error && err.error.message) || r.status + " " + r.statusText);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (line === "[DONE]") continue;
      const chunk = JSON.parse(line);
      for (const c of chunk.choices || []) {
        if (c.delta && c.delta.content) { text += c.delta.content; out.textContent = text; }
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
  }
  return { text, finish };
}

async function badges(model, answer, prompt, col) {
  const r = await fetch("/playground/rules", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
    body: JSON.stringify({ model, answer, prompt }),
  });
  const line = col.querySelector(".checks");
  const rules = r.ok ? (await r.json()).rules : null;
  if (!rules) { line.append(el("span", "muted small", "no rules for this model")); return; }
  for (const [rule, ok] of Object.entries(rules)) {
    line.append(el("span", "res " + (ok ? "ok" : "bad"), (ok ? "✓ " : "✗ ") + rule), " ");
  }
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const data = new FormData(form);
  const chosen = data.getAll("model");
  const prompt = String(data.get("prompt") || "");
  const system = String(data.get("system") || "").trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat([{ role: "user", content: prompt }]);
  if (!chosen.length || !prompt.trim()) { status.textContent = "Pick at least one model and write a prompt."; return; }
  answers.replaceChildren();
  exportButton.disabled = true;
  status.textContent = "Streaming from " + chosen.join(", ") + "…";
  last = { messages, results: {} };
  await Promise.all(chosen.map(async (model) => {
    const col = el("article", "col answer");
    col.dataset.model = model;
    col.append(el("h3", "", model), el("pre", "out"), el("p", "checks"));
    answers.append(col);
    try {
      const { text, finish } = await streamOne(model, messages, Number(data.get("max_tokens")) || 64, col);
      if (finish === "length") col.querySelector("h3").append(" ", el("span", "tag warn", "✂ cut off at max tokens"));
      if (!text.trim()) col.querySelector("pre").textContent = "(an answer of only whitespace)";
      col.dataset.done = "1";
      last.results[model] = text;
      await badges(model, text, prompt, col);
    } catch (e) {
      col.querySelector("pre").textContent = "✗ " + e.message;
      col.dataset.done = "error";
    }
  }));
  status.textContent = "Done.";
  exportButton.disabled = Object.keys(last.results).length === 0;
});

exportButton.addEventListener("click", () => {
  // one test case per answer: the prompt and that model's answer as the reference to keep
  const lines = Object.entries(last.results).map(([model, answer]) => JSON.stringify({
    messages: last.messages.concat([{ role: "assistant", content: answer }]), meta: { model },
  }));
  const a = el("a");
  a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "application/jsonl" }));
  a.download = "playground-cases.jsonl";
  document.body.append(a);
  a.click();
  a.remove();
});
