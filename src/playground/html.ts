import { MODEL_ID, SEED_REQUEST } from '../model.js';

/**
 * The playground page: plain HTML, no inline script or style (the page's CSP allows only its own
 * files), accessible labels on every control. Defaults are the seed request's.
 */

const escapeHtml = (value: string | number): string =>
  String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

interface SliderSpec {
  id: string;
  label: string;
  min: number;
  max: number;
  step: number;
  value: number;
  hint: string;
}

const SLIDERS: SliderSpec[] = [
  { id: 'strength', label: 'Strength', min: 0.01, max: 1, step: 0.01, value: SEED_REQUEST.strength, hint: 'How far the result may move away from the input image.' },
  { id: 'steps', label: 'Inference steps', min: 1, max: 50, step: 1, value: SEED_REQUEST.num_inference_steps, hint: 'More steps: finer detail, slower.' },
  { id: 'guidance', label: 'Guidance scale', min: 0, max: 35, step: 0.1, value: SEED_REQUEST.guidance_scale, hint: 'How closely the model follows the prompt.' },
  { id: 'num-images', label: 'Number of images', min: 1, max: 4, step: 1, value: SEED_REQUEST.num_images, hint: '1 to 4 images per request.' },
];

const slider = (s: SliderSpec): string => `
        <div class="param">
          <div class="param-head">
            <label for="${s.id}" id="${s.id}-label">${escapeHtml(s.label)}</label>
            <input type="number" id="${s.id}" name="${s.id}" min="${s.min}" max="${s.max}" step="${s.step}" value="${s.value}" inputmode="decimal" aria-describedby="${s.id}-hint ${s.id}-error">
          </div>
          <input type="range" id="${s.id}-range" min="${s.min}" max="${s.max}" step="${s.step}" value="${s.value}" aria-labelledby="${s.id}-label" aria-describedby="${s.id}-hint">
          <p class="hint" id="${s.id}-hint">${escapeHtml(s.hint)} <span class="range">${s.min}–${s.max}</span></p>
          <p class="field-error" id="${s.id}-error" hidden></p>
        </div>`;

export const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <title>Playground · fal gateway</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/playground/app.css">
  <script src="/playground/app.js" defer></script>
</head>
<body>
  <header class="topbar">
    <div class="topbar-inner">
      <div class="brand">
        <span class="logo" aria-hidden="true"></span>
        <span class="brand-name">fal gateway</span>
        <span class="brand-sep" aria-hidden="true">/</span>
        <span class="brand-page">Playground</span>
      </div>
      <code class="model" title="Model">${escapeHtml(MODEL_ID)}</code>
      <nav aria-label="Gateway"><a href="/docs">API docs</a></nav>
    </div>
  </header>

  <main class="layout">
    <form id="form" class="card form" novalidate aria-labelledby="form-title">
      <h1 id="form-title" class="card-title">Request</h1>

      <div class="field">
        <label for="key">API key or browser token</label>
        <div class="input-with-button">
          <input type="password" id="key" name="key" autocomplete="off" autocapitalize="off" spellcheck="false" placeholder="Paste your tenant key" aria-describedby="key-hint key-error" required>
          <button type="button" id="toggle-key" class="button ghost" aria-controls="key" aria-pressed="false">Show</button>
        </div>
        <p class="hint" id="key-hint">Sent as <code>Authorization: Bearer …</code>. Kept for this tab only (session storage).</p>
        <p class="field-error" id="key-error" hidden></p>
      </div>

      <fieldset class="field image-field" aria-describedby="image-error">
        <legend>Input image</legend>
        <div class="segmented">
          <input type="radio" name="source" id="source-upload" value="upload">
          <label for="source-upload">Upload a file</label>
          <input type="radio" name="source" id="source-url" value="url" checked>
          <label for="source-url">Image URL</label>
        </div>
        <div id="upload-panel" class="dropzone" hidden>
          <label for="file">Image file</label>
          <input type="file" id="file" name="file" accept="image/png,image/jpeg,image/webp,image/gif,image/avif" aria-describedby="file-hint image-error">
          <p class="hint" id="file-hint">PNG, JPEG, WebP, GIF or AVIF (or drop one here). Sent inline as a data URI.</p>
        </div>
        <div id="url-panel">
          <label for="image-url">Image URL</label>
          <input type="url" id="image-url" name="image_url" value="${escapeHtml(SEED_REQUEST.image_url)}" inputmode="url" spellcheck="false" aria-describedby="image-url-hint image-error">
          <p class="hint" id="image-url-hint">An <code>http(s)://</code> address the model can fetch.</p>
        </div>
        <figure id="preview" class="preview" hidden>
          <img id="preview-img" alt="Preview of the input image">
          <figcaption id="preview-caption"></figcaption>
        </figure>
        <p class="field-error" id="image-error" hidden></p>
      </fieldset>

      <div class="field">
        <label for="prompt">Prompt</label>
        <textarea id="prompt" name="prompt" rows="3" aria-describedby="prompt-error" required>${escapeHtml(SEED_REQUEST.prompt)}</textarea>
        <p class="field-error" id="prompt-error" hidden></p>
      </div>

      <fieldset class="field params">
        <legend>Parameters</legend>
        <div class="param-grid">${SLIDERS.map(slider).join('')}
          <div class="param">
            <div class="param-head">
              <label for="format">Output format</label>
              <select id="format" name="format" aria-describedby="format-error">
                <option value="jpeg"${SEED_REQUEST.output_format === 'jpeg' ? ' selected' : ''}>JPEG</option>
                <option value="png">PNG</option>
              </select>
            </div>
            <p class="field-error" id="format-error" hidden></p>
          </div>
          <div class="param">
            <div class="param-head">
              <label for="seed">Seed</label>
              <input type="number" id="seed" name="seed" step="1" placeholder="random" inputmode="numeric" aria-describedby="seed-hint seed-error">
            </div>
            <p class="hint" id="seed-hint">Leave empty for a random seed.</p>
            <p class="field-error" id="seed-error" hidden></p>
          </div>
        </div>
        <label class="checkbox"><input type="checkbox" id="safety" name="safety" checked> Enable the safety checker</label>
      </fieldset>

      <div class="actions">
        <button type="submit" id="submit" class="button primary">Generate</button>
        <button type="button" id="cancel" class="button secondary" disabled>Cancel</button>
      </div>
    </form>

    <div class="side">
      <section class="card" id="run" aria-labelledby="run-title">
        <div class="card-head">
          <h2 id="run-title" class="card-title">Progress</h2>
          <span id="status" class="pill" data-status="IDLE">Idle</span>
        </div>
        <div id="message" class="message" role="status" aria-live="polite" hidden></div>
        <dl class="facts">
          <div><dt>Request id</dt><dd id="request-id">—</dd></div>
          <div><dt>Queue position</dt><dd id="queue-position">—</dd></div>
          <div><dt>Elapsed</dt><dd id="elapsed">—</dd></div>
        </dl>
        <progress id="progress" max="1" value="0" aria-label="Inference progress"></progress>
        <h3 class="sub-title" id="logs-title">Status and logs</h3>
        <ol id="logs" class="logs" aria-labelledby="logs-title" tabindex="0">
          <li class="log-empty">Nothing yet. Submit a request to follow its queue position and runner logs here.</li>
        </ol>
      </section>

      <section class="card" id="results-card" aria-labelledby="results-title">
        <div class="card-head">
          <h2 id="results-title" class="card-title">Results</h2>
          <dl id="result-meta" class="result-meta" hidden>
            <div><dt>Seed</dt><dd id="result-seed"></dd></div>
            <div><dt>Inference</dt><dd id="result-time"></dd></div>
          </dl>
        </div>
        <div id="results" class="gallery" aria-live="polite">
          <p class="gallery-empty" id="results-empty">The generated images appear here.</p>
        </div>
      </section>
    </div>
  </main>
</body>
</html>
`;
