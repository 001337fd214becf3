/** The playground's stylesheet (served as /playground/app.css). */
export const css = `
:root {
  color-scheme: light dark;
  --bg: #f4f5f8;
  --card: #ffffff;
  --border: #e2e5ec;
  --border-strong: #c9ced8;
  --text: #1a1d24;
  --muted: #5c6473;
  --accent: #4f46e5;
  --accent-hover: #4338ca;
  --accent-soft: #eef0ff;
  --danger: #b42318;
  --danger-soft: #fef3f2;
  --danger-border: #fecdca;
  --ok: #067647;
  --ok-soft: #ecfdf3;
  --ok-border: #abefc6;
  --info: #175cd3;
  --info-soft: #eff8ff;
  --info-border: #b2ddff;
  --warn: #b54708;
  --warn-soft: #fffaeb;
  --code-bg: #f7f8fa;
  --radius: 12px;
  --shadow: 0 1px 2px rgba(16, 24, 40, 0.05), 0 1px 3px rgba(16, 24, 40, 0.06);
  --mono: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", "Liberation Sans", sans-serif;
}

@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1115;
    --card: #171a21;
    --border: #2a2f3a;
    --border-strong: #3a4150;
    --text: #e7e9ee;
    --muted: #9aa3b2;
    --accent: #818cf8;
    --accent-hover: #a5b4fc;
    --accent-soft: #1f2240;
    --danger: #f97066;
    --danger-soft: #2a1415;
    --danger-border: #5c1f1c;
    --ok: #47cd89;
    --ok-soft: #0f2419;
    --ok-border: #1f5136;
    --info: #84caff;
    --info-soft: #0f1e2e;
    --info-border: #1d3f66;
    --warn: #fdb022;
    --warn-soft: #2a2010;
    --code-bg: #12151b;
    --shadow: none;
  }
}

*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }

html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0;
  background: var(--bg);
  color: var(--text);
  font: 14px/1.5 var(--sans);
}
code { font-family: var(--mono); font-size: 0.92em; }
a { color: var(--accent); }
a:hover { color: var(--accent-hover); }

/* Top bar */
.topbar {
  background: #11131a;
  color: #f2f4f8;
  border-bottom: 1px solid #232733;
}
.topbar-inner {
  max-width: 1280px;
  margin: 0 auto;
  padding: 12px 24px;
  display: flex;
  align-items: center;
  gap: 16px;
  flex-wrap: wrap;
}
.brand { display: flex; align-items: center; gap: 8px; font-weight: 600; font-size: 15px; }
.logo {
  width: 22px; height: 22px; border-radius: 6px;
  background: linear-gradient(135deg, #818cf8 0%, #4f46e5 45%, #22d3ee 100%);
}
.brand-sep { color: #6b7280; font-weight: 400; }
.brand-page { font-weight: 500; color: #c7cbd6; }
.model {
  color: #c7cbd6; background: #1c1f2a; border: 1px solid #2b3040;
  padding: 2px 8px; border-radius: 6px; font-size: 12px;
}
.topbar nav { margin-left: auto; }
.topbar nav a { color: #c7d2fe; text-decoration: none; font-weight: 500; }
.topbar nav a:hover { color: #ffffff; text-decoration: underline; }

/* Layout */
.layout {
  max-width: 1280px;
  margin: 0 auto;
  padding: 24px;
  display: grid;
  grid-template-columns: minmax(0, 5fr) minmax(0, 6fr);
  gap: 24px;
  align-items: start;
}
.side { display: grid; gap: 24px; min-width: 0; }
@media (max-width: 920px) {
  .layout { grid-template-columns: minmax(0, 1fr); padding: 16px; gap: 16px; }
  .side { gap: 16px; }
}

.card {
  background: var(--card);
  border: 1px solid var(--border);
  border-radius: var(--radius);
  box-shadow: var(--shadow);
  padding: 20px;
  min-width: 0;
}
.card-head { display: flex; align-items: center; justify-content: space-between; gap: 12px; flex-wrap: wrap; margin-bottom: 12px; }
.card-title { font-size: 16px; font-weight: 600; margin: 0; }
.form .card-title { margin-bottom: 16px; }
.sub-title { font-size: 13px; font-weight: 600; margin: 16px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; }

/* Form */
.field { margin: 0 0 18px; padding: 0; border: 0; min-width: 0; }
fieldset.field { border-top: 1px solid var(--border); padding-top: 16px; }
legend { font-weight: 600; padding: 0; margin-bottom: 10px; float: left; width: 100%; }
legend + * { clear: both; }
label { display: block; font-weight: 500; margin-bottom: 6px; }
.hint { margin: 6px 0 0; color: var(--muted); font-size: 12.5px; }
.hint .range { font-family: var(--mono); font-size: 11.5px; white-space: nowrap; }
.field-error { margin: 6px 0 0; color: var(--danger); font-size: 12.5px; font-weight: 500; }

input[type="password"], input[type="text"], input[type="url"], input[type="number"], textarea, select {
  width: 100%;
  font: inherit;
  color: var(--text);
  background: var(--card);
  border: 1px solid var(--border-strong);
  border-radius: 8px;
  padding: 8px 10px;
  min-height: 38px;
  transition: border-color 0.12s, box-shadow 0.12s;
}
textarea { resize: vertical; min-height: 76px; }
input:focus-visible, textarea:focus-visible, select:focus-visible, button:focus-visible {
  outline: none;
  border-color: var(--accent);
  box-shadow: 0 0 0 3px color-mix(in srgb, var(--accent) 25%, transparent);
}
[aria-invalid="true"] { border-color: var(--danger) !important; }
input[type="range"] { width: 100%; accent-color: var(--accent); margin: 4px 0 0; }
input[type="checkbox"] { accent-color: var(--accent); width: 16px; height: 16px; margin: 0; }
input[type="file"] { width: 100%; font: inherit; color: var(--muted); }
input[type="file"]::file-selector-button {
  font: inherit; font-weight: 500; color: var(--text);
  background: var(--card); border: 1px solid var(--border-strong); border-radius: 8px;
  padding: 6px 12px; margin-right: 10px; cursor: pointer;
}
input[type="file"]::file-selector-button:hover { border-color: var(--accent); }

.input-with-button { display: flex; gap: 8px; }
.input-with-button input { flex: 1; min-width: 0; font-family: var(--mono); font-size: 13px; }

.checkbox { display: flex; align-items: center; gap: 8px; font-weight: 400; margin: 4px 0 0; }

/* Image source switch */
.segmented {
  display: inline-flex;
  background: var(--code-bg);
  border: 1px solid var(--border);
  border-radius: 9px;
  padding: 3px;
  margin-bottom: 12px;
}
.segmented input { position: absolute; opacity: 0; width: 1px; height: 1px; pointer-events: none; }
.segmented label {
  margin: 0; padding: 5px 14px; border-radius: 7px; cursor: pointer;
  color: var(--muted); font-weight: 500; font-size: 13px;
}
.segmented input:checked + label { background: var(--card); color: var(--text); box-shadow: var(--shadow); }
.segmented input:focus-visible + label { outline: 2px solid var(--accent); outline-offset: 1px; }

.dropzone {
  border: 1.5px dashed var(--border-strong);
  border-radius: 10px;
  padding: 12px 14px;
  transition: border-color 0.12s, background 0.12s;
}
.dropzone.dragging { border-color: var(--accent); background: var(--accent-soft); }

.preview {
  margin: 12px 0 0;
  display: flex; align-items: center; gap: 12px;
  padding: 8px; border: 1px solid var(--border); border-radius: 10px; background: var(--code-bg);
}
.preview img { width: 96px; height: 72px; object-fit: cover; border-radius: 6px; background: var(--border); flex: none; }
.preview figcaption { color: var(--muted); font-size: 12.5px; overflow-wrap: anywhere; min-width: 0; }

/* Parameters */
.param-grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px 20px; margin-bottom: 14px; }
@media (max-width: 520px) { .param-grid { grid-template-columns: minmax(0, 1fr); } }
.param { min-width: 0; }
.param-head { display: flex; align-items: center; justify-content: space-between; gap: 10px; }
.param-head label { margin: 0; }
.param-head input[type="number"] { width: 88px; min-height: 32px; padding: 4px 8px; text-align: right; font-variant-numeric: tabular-nums; }
.param-head select { width: 100px; min-height: 32px; padding: 4px 8px; }
.param-head #seed { width: 120px; }

/* Buttons */
.actions { display: flex; gap: 10px; border-top: 1px solid var(--border); padding-top: 16px; }
.button {
  font: inherit; font-weight: 600;
  border-radius: 8px; border: 1px solid transparent;
  padding: 9px 18px; min-height: 40px; cursor: pointer;
  transition: background 0.12s, border-color 0.12s, color 0.12s;
}
.button:disabled { cursor: not-allowed; opacity: 0.55; }
.button.primary { background: var(--accent); color: #ffffff; flex: 1; }
.button.primary:hover:not(:disabled) { background: var(--accent-hover); }
.button.secondary { background: var(--card); color: var(--danger); border-color: var(--border-strong); }
.button.secondary:hover:not(:disabled) { border-color: var(--danger); background: var(--danger-soft); }
.button.secondary:disabled { color: var(--muted); }
.button.ghost { background: var(--card); color: var(--text); border-color: var(--border-strong); font-weight: 500; padding: 6px 12px; }
.button.ghost:hover { border-color: var(--accent); }

/* Status */
.pill {
  display: inline-flex; align-items: center; gap: 6px;
  font-size: 12px; font-weight: 600; letter-spacing: 0.02em;
  padding: 3px 10px; border-radius: 999px;
  background: var(--code-bg); color: var(--muted); border: 1px solid var(--border);
}
.pill::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.pill[data-status="SUBMITTING"], .pill[data-status="IN_QUEUE"] { color: var(--warn); background: var(--warn-soft); border-color: transparent; }
.pill[data-status="IN_PROGRESS"] { color: var(--info); background: var(--info-soft); border-color: var(--info-border); }
.pill[data-status="COMPLETED"] { color: var(--ok); background: var(--ok-soft); border-color: var(--ok-border); }
.pill[data-status="CANCELLED"] { color: var(--muted); }
.pill[data-status="ERROR"] { color: var(--danger); background: var(--danger-soft); border-color: var(--danger-border); }
.pill[data-status="IN_QUEUE"]::before, .pill[data-status="IN_PROGRESS"]::before, .pill[data-status="SUBMITTING"]::before { animation: pulse 1.2s ease-in-out infinite; }
@keyframes pulse { 50% { opacity: 0.3; } }
@media (prefers-reduced-motion: reduce) { .pill::before { animation: none !important; } }

.facts { display: grid; grid-template-columns: minmax(0, 2.2fr) minmax(0, 1fr) minmax(0, 1fr); gap: 12px; margin: 0 0 12px; }
.facts div { min-width: 0; }
.facts dt, .result-meta dt { color: var(--muted); font-size: 12px; }
.facts dd, .result-meta dd { margin: 2px 0 0; font-weight: 600; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
#request-id { font-family: var(--mono); font-size: 12.5px; font-weight: 500; }
@media (max-width: 520px) { .facts { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); } .facts div:first-child { grid-column: 1 / -1; } }

progress {
  width: 100%; height: 6px; border: 0; border-radius: 999px; overflow: hidden;
  background: var(--code-bg); appearance: none; -webkit-appearance: none; display: block;
}
progress::-webkit-progress-bar { background: var(--border); border-radius: 999px; }
progress::-webkit-progress-value { background: var(--accent); border-radius: 999px; transition: width 0.2s; }
progress::-moz-progress-bar { background: var(--accent); border-radius: 999px; }

.logs {
  list-style: none; margin: 0; padding: 8px 0;
  font: 12.5px/1.55 var(--mono);
  background: var(--code-bg); border: 1px solid var(--border); border-radius: 8px;
  max-height: 320px; min-height: 88px; overflow: auto;
}
.logs li { display: grid; grid-template-columns: 92px minmax(0, 1fr); gap: 10px; padding: 1px 12px; }
.logs li.log-empty { display: block; color: var(--muted); font-family: var(--sans); font-size: 13px; padding: 8px 12px; }
.logs time { color: var(--muted); }
.logs .log-message { overflow-wrap: anywhere; }
.logs .kind-status .log-message { color: var(--accent); font-weight: 600; }
.logs .kind-system .log-message { color: var(--muted); font-style: italic; }
.logs .kind-error .log-message { color: var(--danger); }

/* Messages */
.message { border-radius: 8px; padding: 10px 14px; margin: 0 0 14px; border: 1px solid; }
.message.info { background: var(--info-soft); border-color: var(--info-border); }
.message.success { background: var(--ok-soft); border-color: var(--ok-border); }
.message.error { background: var(--danger-soft); border-color: var(--danger-border); }
.message-title { font-weight: 600; margin: 0; }
.message.error .message-title { color: var(--danger); }
.message.success .message-title { color: var(--ok); }
.message.info .message-title { color: var(--info); }
.message-text { margin: 2px 0 0; }
.message ul { margin: 6px 0 0; padding-left: 18px; }
.message li { margin: 2px 0; }
.message-meta { margin: 6px 0 0; color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.message details { margin-top: 6px; font-size: 12px; }
.message summary { cursor: pointer; color: var(--muted); }
.message pre {
  margin: 6px 0 0; padding: 8px; max-height: 180px; overflow: auto;
  background: var(--card); border: 1px solid var(--border); border-radius: 6px;
  font: 12px/1.45 var(--mono); white-space: pre-wrap; overflow-wrap: anywhere;
}

/* Results */
.result-meta { display: flex; gap: 20px; margin: 0; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 16px; }
.gallery-empty {
  grid-column: 1 / -1; margin: 0; padding: 32px 16px; text-align: center; color: var(--muted);
  border: 1.5px dashed var(--border); border-radius: 10px;
}
.result { margin: 0; border: 1px solid var(--border); border-radius: 10px; overflow: hidden; background: var(--code-bg); }
.result a.result-link { display: block; line-height: 0; }
.result img { display: block; width: 100%; height: auto; background: var(--border); }
.result figcaption {
  display: flex; justify-content: space-between; align-items: center; gap: 8px;
  padding: 8px 10px; font-size: 12.5px; color: var(--muted); background: var(--card); border-top: 1px solid var(--border);
}
.result figcaption a { font-weight: 500; white-space: nowrap; }
`;
