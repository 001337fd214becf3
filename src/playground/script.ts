/**
 * The playground's browser code (served as /playground/app.js). Plain ES2020, no framework, no
 * build step. It lives in a string so that `tsc` carries it into dist/ with the rest; written
 * without template literals (String.raw keeps regex backslashes as written).
 *
 * Flow: POST /v1/image-to-image, then follow the job with the status stream (fetch +
 * ReadableStream: EventSource cannot send the Authorization header), falling back to polling
 * status_url every 500 ms; on COMPLETED fetch response_url and render the images. Every
 * server-provided string reaches the page through textContent, never as HTML.
 */
export const js = String.raw`(function () {
  'use strict';

  var KEY_STORAGE = 'fal-gateway.playground.key';
  var POLL_MS = 500;
  var IMAGE_TYPES = /^image\/(png|jpeg|webp|gif|avif)$/;
  var FIELD_OF_PARAM = {
    prompt: 'prompt', image_url: 'image', strength: 'strength', num_inference_steps: 'steps',
    guidance_scale: 'guidance', num_images: 'num-images', output_format: 'format', seed: 'seed',
  };
  var LABEL_OF_PARAM = {
    prompt: 'Prompt', image_url: 'Input image', strength: 'Strength', num_inference_steps: 'Inference steps',
    guidance_scale: 'Guidance scale', num_images: 'Number of images', output_format: 'Output format', seed: 'Seed',
    enable_safety_checker: 'Safety checker',
  };
  var STATUS_LABELS = {
    IDLE: 'Idle', SUBMITTING: 'Submitting', IN_QUEUE: 'In queue', IN_PROGRESS: 'Running',
    COMPLETED: 'Completed', CANCELLED: 'Cancelled', ERROR: 'Failed',
  };

  function $(id) { return document.getElementById(id); }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  var ui = {
    form: $('form'), key: $('key'), toggleKey: $('toggle-key'), file: $('file'), imageUrl: $('image-url'),
    sourceUpload: $('source-upload'), sourceUrl: $('source-url'), uploadPanel: $('upload-panel'), urlPanel: $('url-panel'),
    preview: $('preview'), previewImg: $('preview-img'), previewCaption: $('preview-caption'),
    prompt: $('prompt'), format: $('format'), seed: $('seed'), safety: $('safety'),
    submit: $('submit'), cancel: $('cancel'), status: $('status'), message: $('message'),
    requestId: $('request-id'), queuePosition: $('queue-position'), elapsed: $('elapsed'), progress: $('progress'),
    logs: $('logs'), results: $('results'), resultMeta: $('result-meta'), resultSeed: $('result-seed'), resultTime: $('result-time'),
    run: $('run'),
  };

  // One run at a time; every async step checks it still belongs to the current run.
  var run = null;
  var upload = { dataUri: null, name: '', reading: null };

  // ---- Key: remembered for this tab only (sessionStorage, never localStorage) ----
  try {
    var saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) ui.key.value = saved;
  } catch (e) { /* storage disabled: the key is simply not remembered */ }
  ui.key.addEventListener('input', function () {
    clearFieldError('key');
    try {
      if (ui.key.value) sessionStorage.setItem(KEY_STORAGE, ui.key.value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) { /* ignore */ }
  });
  ui.toggleKey.addEventListener('click', function () {
    var show = ui.key.type === 'password';
    ui.key.type = show ? 'text' : 'password';
    ui.toggleKey.textContent = show ? 'Hide' : 'Show';
    ui.toggleKey.setAttribute('aria-pressed', show ? 'true' : 'false');
  });

  // ---- Sliders and their number boxes stay in step ----
  ['strength', 'steps', 'guidance', 'num-images'].forEach(function (id) {
    var number = $(id);
    var range = $(id + '-range');
    range.addEventListener('input', function () { number.value = range.value; clearFieldError(id); });
    number.addEventListener('input', function () {
      clearFieldError(id);
      if (number.value !== '' && isFinite(Number(number.value))) range.value = number.value;
    });
  });
  ui.prompt.addEventListener('input', function () { clearFieldError('prompt'); });
  ui.seed.addEventListener('input', function () { clearFieldError('seed'); });

  // ---- Input image: an uploaded file (as a data URI) or a URL ----
  function source() { return ui.sourceUpload.checked ? 'upload' : 'url'; }
  function setSource(value) {
    ui.sourceUpload.checked = value === 'upload';
    ui.sourceUrl.checked = value === 'url';
    ui.uploadPanel.hidden = value !== 'upload';
    ui.urlPanel.hidden = value !== 'url';
    clearFieldError('image');
    showPreview();
  }
  ui.sourceUpload.addEventListener('change', function () { setSource('upload'); });
  ui.sourceUrl.addEventListener('change', function () { setSource('url'); });

  var urlPreviewWanted = false;
  function showPreview() {
    if (source() === 'upload' && upload.dataUri) {
      ui.previewImg.src = upload.dataUri;
      ui.previewCaption.textContent = upload.name;
      ui.preview.hidden = false;
    } else if (source() === 'url' && urlPreviewWanted && /^https?:\/\//i.test(ui.imageUrl.value.trim())) {
      ui.previewImg.src = ui.imageUrl.value.trim();
      ui.previewCaption.textContent = ui.imageUrl.value.trim();
      ui.preview.hidden = false;
    } else {
      ui.preview.hidden = true;
      ui.previewImg.removeAttribute('src');
    }
  }
  ui.previewImg.addEventListener('load', function () {
    if (source() === 'upload' && upload.dataUri) {
      ui.previewCaption.textContent = upload.name + ' · ' + ui.previewImg.naturalWidth + '×' + ui.previewImg.naturalHeight;
    }
  });
  ui.previewImg.addEventListener('error', function () {
    if (source() === 'url') ui.previewCaption.textContent = 'No preview (the page could not load it); the model fetches the URL itself.';
  });
  ui.imageUrl.addEventListener('input', function () { clearFieldError('image'); });
  // The preview of a URL is shown only once someone edits it: the page makes no request on its own.
  ui.imageUrl.addEventListener('change', function () { urlPreviewWanted = true; showPreview(); });

  function readFile(file) {
    upload.dataUri = null;
    upload.name = '';
    clearFieldError('image');
    if (!file) { upload.reading = null; showPreview(); return; }
    setSource('upload');
    if (!IMAGE_TYPES.test(file.type)) {
      upload.reading = null;
      setFieldError('image', 'Choose a PNG, JPEG, WebP, GIF or AVIF image (this file is ' + (file.type || 'of an unknown type') + ').');
      showPreview();
      return;
    }
    upload.reading = new Promise(function (resolve) {
      var reader = new FileReader();
      reader.onload = function () {
        upload.dataUri = String(reader.result);
        upload.name = file.name + ' (' + formatBytes(file.size) + ')';
        showPreview();
        resolve();
      };
      reader.onerror = function () {
        setFieldError('image', 'The file could not be read: ' + (reader.error ? reader.error.message : 'unknown error'));
        resolve();
      };
      reader.readAsDataURL(file);
    });
  }
  ui.file.addEventListener('change', function () { readFile(ui.file.files && ui.file.files[0]); });
  ui.uploadPanel.addEventListener('dragover', function (event) { event.preventDefault(); ui.uploadPanel.classList.add('dragging'); });
  ui.uploadPanel.addEventListener('dragleave', function () { ui.uploadPanel.classList.remove('dragging'); });
  ui.uploadPanel.addEventListener('drop', function (event) {
    event.preventDefault();
    ui.uploadPanel.classList.remove('dragging');
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      try { ui.file.files = files; } catch (e) { /* read-only in old browsers */ }
      readFile(files[0]);
    }
  });

  // ---- Field errors (422) ----
  function fieldInput(field) {
    if (field === 'image') return source() === 'upload' ? ui.file : ui.imageUrl;
    return $(field);
  }
  function setFieldError(field, text) {
    var box = $(field + '-error');
    if (box) { box.textContent = text; box.hidden = false; }
    var input = fieldInput(field);
    if (input) input.setAttribute('aria-invalid', 'true');
  }
  function clearFieldError(field) {
    var box = $(field + '-error');
    if (box) { box.textContent = ''; box.hidden = true; }
    var input = fieldInput(field);
    if (input) input.removeAttribute('aria-invalid');
    if (field === 'image') { ui.file.removeAttribute('aria-invalid'); ui.imageUrl.removeAttribute('aria-invalid'); }
  }
  function clearAllFieldErrors() {
    ['key', 'image', 'prompt', 'strength', 'steps', 'guidance', 'num-images', 'format', 'seed'].forEach(clearFieldError);
  }

  // ---- Message area ----
  function showMessage(kind, title, text, extra) {
    var box = ui.message;
    box.textContent = '';
    box.className = 'message ' + kind;
    box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    box.appendChild(el('p', 'message-title', title));
    if (text) box.appendChild(el('p', 'message-text', text));
    if (extra) extra.forEach(function (node) { if (node) box.appendChild(node); });
    box.hidden = false;
  }
  function hideMessage() { ui.message.hidden = true; ui.message.textContent = ''; }

  function detailText(detail) {
    if (typeof detail === 'string') return detail;
    if (detail && typeof detail === 'object' && typeof detail.msg === 'string') return detail.msg;
    return '';
  }
  function paramName(loc) {
    if (!Array.isArray(loc)) return '';
    var parts = loc[0] === 'body' ? loc.slice(1) : loc.slice();
    return parts.join('.');
  }

  /** A readable account of an error answer: title, explanation, per-field problems, ids. */
  function showHttpError(res, body, action) {
    var status = res.status;
    var detail = body && typeof body === 'object' ? body.detail : undefined;
    var errorType = body && typeof body === 'object' && typeof body.error_type === 'string' ? body.error_type : '';
    var text = detailText(detail);
    var title;
    var explanation = text;
    var list = null;
    var retryAfter = res.headers.get('retry-after');

    if (status === 401) {
      title = 'Not authorized (401)';
      explanation = 'The gateway did not accept this key or token. Check that you pasted the whole key; a browser token may have expired.';
      setFieldError('key', 'This key or token was not accepted.');
    } else if (status === 403) {
      title = 'Forbidden (403)';
      explanation = text || 'This key may not make this call.';
    } else if (status === 404) {
      title = 'Not found (404)';
      explanation = action === 'submit' ? (text || 'The gateway does not serve this route.') :
        'The gateway has no such request for this key: it may belong to another tenant, or it expired.';
    } else if (status === 413) {
      title = 'Request too large (413)';
      explanation = (text ? text + '. ' : '') + 'Use a smaller image, or give its URL instead.';
    } else if (status === 422) {
      title = 'The request was rejected (422)';
      if (Array.isArray(detail)) {
        explanation = detail.length === 1 ? 'One field needs fixing:' : detail.length + ' fields need fixing:';
        list = el('ul');
        detail.forEach(function (entry) {
          var name = paramName(entry && entry.loc);
          var top = name.split('.')[0];
          var label = LABEL_OF_PARAM[top] ? LABEL_OF_PARAM[top] + (name !== top ? ' (' + name + ')' : '') : (name || 'Request');
          var msg = detailText(entry) || 'invalid';
          list.appendChild(el('li', '', label + ': ' + msg));
          if (FIELD_OF_PARAM[top]) setFieldError(FIELD_OF_PARAM[top], msg);
        });
      }
    } else if (status === 429) {
      title = 'Rate limit reached (429)';
      explanation = 'This key has used up its ' + (action === 'submit' ? 'submit' : 'read') + ' budget for now.' +
        (retryAfter ? ' Try again in ' + retryAfter + ' s.' : ' Try again shortly.');
    } else if (status === 400 && action === 'result') {
      title = 'No result';
      explanation = text || 'The job produced no result.';
    } else if (status >= 500) {
      title = 'Server error (' + status + ')';
      explanation = (text || 'The gateway or fal failed.') + (retryAfter ? ' Retry in ' + retryAfter + ' s.' : '');
    } else {
      title = 'Unexpected answer (' + status + ')';
    }
    var meta = [];
    if (errorType) meta.push('error_type: ' + errorType);
    var gatewayId = res.headers.get('x-request-id');
    if (gatewayId) meta.push('x-request-id: ' + gatewayId);
    var raw = null;
    if (body !== undefined && body !== null) {
      raw = el('details');
      raw.appendChild(el('summary', '', 'Response body'));
      raw.appendChild(el('pre', '', typeof body === 'string' ? body : JSON.stringify(body, null, 2)));
    }
    showMessage('error', title, explanation, [list, meta.length ? el('p', 'message-meta', meta.join(' · ')) : null, raw]);
    addLog('error', action + ' answered ' + status + (errorType ? ' ' + errorType : '') + (text ? ': ' + text : ''));
  }

  function showNetworkError(action, err) {
    showMessage('error', 'Could not reach the gateway', 'The ' + action + ' request failed before an answer came back (' +
      (err && err.message ? err.message : 'network error') + '). Check your connection and try again.');
    addLog('error', action + ' failed: ' + (err && err.message ? err.message : 'network error'));
  }

  // ---- Status, progress and logs ----
  function setStatus(status) {
    ui.status.dataset.status = status;
    ui.status.textContent = STATUS_LABELS[status] || status;
  }
  function timeOf() {
    var date = new Date();
    function pad(n, w) { n = String(n); while (n.length < w) n = '0' + n; return n; }
    return pad(date.getHours(), 2) + ':' + pad(date.getMinutes(), 2) + ':' + pad(date.getSeconds(), 2) + '.' + pad(date.getMilliseconds(), 3);
  }
  /** One line, stamped with when it arrived (so the list reads in order); a runner log's own time is its title. */
  function addLog(kind, message, runnerTime) {
    var empty = ui.logs.querySelector('.log-empty');
    if (empty) empty.remove();
    var item = el('li', 'kind-' + kind);
    var time = el('time', '', timeOf());
    time.setAttribute('datetime', new Date().toISOString());
    if (runnerTime) time.title = 'Runner time: ' + runnerTime;
    item.appendChild(time);
    item.appendChild(el('span', 'log-message', message));
    ui.logs.appendChild(item);
    ui.logs.scrollTop = ui.logs.scrollHeight;
  }
  function resetLogs() {
    ui.logs.textContent = '';
    ui.logs.appendChild(el('li', 'log-empty', 'Waiting for the gateway…'));
  }

  function formatSeconds(s) { return (Math.round(s * 10) / 10).toFixed(1) + ' s'; }
  function formatBytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return Math.round(n / 1024) + ' KB';
    return (n / 1024 / 1024).toFixed(1) + ' MB';
  }

  function isActive(r) { return r && r === run && !r.finished; }

  function statusLine(r, s) {
    if (s.status !== r.lastStatus) {
      r.lastStatus = s.status;
      var line = s.status;
      if (s.status === 'IN_QUEUE' && typeof s.queue_position === 'number') line += ' · queue position ' + s.queue_position;
      addLog('status', line);
      if (s.status === 'IN_QUEUE' || s.status === 'IN_PROGRESS') setStatus(s.status);
    } else if (s.status === 'IN_QUEUE' && typeof s.queue_position === 'number' && s.queue_position !== r.lastPosition) {
      addLog('status', 'IN_QUEUE · queue position ' + s.queue_position);
    }
  }

  /** Applies one status object (from the submit answer, the stream or a poll). */
  function applyStatus(r, s) {
    if (!isActive(r) || !s || typeof s.status !== 'string') return;
    var completed = s.status === 'COMPLETED';
    // A status line comes before the runner logs it carries, except COMPLETED, which ends them.
    if (!completed) statusLine(r, s);
    if (s.status === 'IN_QUEUE') {
      r.lastPosition = s.queue_position;
      ui.queuePosition.textContent = typeof s.queue_position === 'number' ? String(s.queue_position) : '—';
    } else {
      ui.queuePosition.textContent = s.status === 'IN_PROGRESS' ? 'running' : '—';
    }
    if (Array.isArray(s.logs)) {
      s.logs.forEach(function (entry) {
        if (!entry || typeof entry.message !== 'string') return;
        var id = (entry.timestamp || '') + '|' + entry.message;
        if (r.seenLogs[id]) return;
        r.seenLogs[id] = true;
        addLog('runner', entry.message, entry.timestamp);
        var step = /Step (\d+)\/(\d+)/.exec(entry.message);
        if (step) ui.progress.value = Math.min(1, Number(step[1]) / Number(step[2]));
      });
    }
    if (completed) statusLine(r, s);
    if (!r.cancelRequested) ui.cancel.disabled = !(s.status === 'IN_QUEUE' || s.status === 'IN_PROGRESS');
    if (s.status === 'COMPLETED') {
      r.completedStatus = s;
      finishStatus(r);
    }
  }

  function authHeaders(r, extra) {
    var headers = { authorization: 'Bearer ' + r.key };
    if (extra) Object.keys(extra).forEach(function (k) { headers[k] = extra[k]; });
    return headers;
  }

  /**
   * Queue URLs point at the gateway. The page talks to its own origin only (connect-src 'self'),
   * so only their path is used: the same route on the origin this page came from.
   */
  function onThisOrigin(url, fallbackPath) {
    try {
      var parsed = new URL(url, location.href);
      return parsed.pathname + parsed.search;
    } catch (e) {
      return fallbackPath;
    }
  }

  async function readBody(res) {
    var text = await res.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch (e) { return text; }
  }

  // ---- Following the job: the status stream, else polling ----
  async function follow(r) {
    var controller = new AbortController();
    r.abort = controller;
    var path = r.urls.status.split('?')[0] + '/stream?logs=1';
    try {
      var res = await fetch(path, { headers: authHeaders(r, { accept: 'text/event-stream' }), signal: controller.signal, cache: 'no-store' });
      if (!isActive(r)) return;
      if (res.status === 401 || res.status === 403 || res.status === 404) {
        showHttpError(res, await readBody(res), 'status');
        return fail(r);
      }
      if (!res.ok || !res.body) throw new Error('the stream answered ' + res.status);
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      var data = [];
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        var newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          var line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.charAt(line.length - 1) === '\r') line = line.slice(0, -1);
          if (line === '') {
            if (data.length) {
              var payload = data.join('\n');
              data = [];
              try { applyStatus(r, JSON.parse(payload)); } catch (e) { /* not a status object */ }
            }
          } else if (line.indexOf('data:') === 0) {
            data.push(line.slice(5).replace(/^ /, ''));
          }
        }
        if (!isActive(r) || r.completedStatus) { controller.abort(); return; }
      }
      if (isActive(r) && !r.completedStatus) throw new Error('the stream ended before COMPLETED');
    } catch (err) {
      if (!isActive(r) || r.completedStatus) return;
      addLog('system', 'Status stream unavailable (' + (err && err.message ? err.message : 'error') + '); polling every ' + POLL_MS + ' ms instead.');
      poll(r);
    }
  }

  async function poll(r) {
    if (!isActive(r) || r.completedStatus) return;
    var delay = POLL_MS;
    try {
      var res = await fetch(r.urls.status.split('?')[0] + '?logs=1', { headers: authHeaders(r), cache: 'no-store' });
      var body = await readBody(res);
      if (!isActive(r)) return;
      if (res.status === 200 || res.status === 202) {
        applyStatus(r, body);
        if (r.completedStatus) return;
      } else if (res.status === 429 || res.status >= 500) {
        // Transient: say so, keep following.
        var retryAfter = Number(res.headers.get('retry-after'));
        if (retryAfter > 0) delay = retryAfter * 1000;
        addLog('error', 'status answered ' + res.status + '; retrying in ' + formatSeconds(delay / 1000));
      } else {
        showHttpError(res, body, 'status');
        return fail(r);
      }
    } catch (err) {
      if (!isActive(r)) return;
      delay = 2000;
      addLog('error', 'status poll failed (' + (err && err.message ? err.message : 'network error') + '); retrying');
    }
    r.pollTimer = setTimeout(function () { poll(r); }, delay);
  }

  // ---- Completion: result, cancellation or failure ----
  async function finishStatus(r) {
    if (r.abort) r.abort.abort();
    clearTimeout(r.pollTimer);
    ui.cancel.disabled = true;
    var s = r.completedStatus;
    var inference = s.metrics && typeof s.metrics.inference_time === 'number' ? s.metrics.inference_time : null;
    if (s.error_type === 'request_cancelled') return cancelled(r);
    try {
      var res = await fetch(r.urls.response, { headers: authHeaders(r), cache: 'no-store' });
      var body = await readBody(res);
      if (r !== run) return;
      if (res.ok && body && Array.isArray(body.images)) {
        renderResults(r, body, inference);
        return;
      }
      if (res.status === 400 && body && /cancel/i.test(detailText(body.detail))) return cancelled(r);
      showHttpError(res, body, 'result');
      if (s.error) addLog('error', s.error);
      fail(r);
    } catch (err) {
      showNetworkError('result', err);
      fail(r);
    }
  }

  function cancelled(r) {
    ui.progress.value = 0;
    showMessage('info', 'Cancelled', 'The job was cancelled' + (r.lastStatus === 'IN_PROGRESS' ? ' while running' : '') + '; no images were produced.');
    addLog('system', 'Job cancelled');
    end(r, 'CANCELLED');
  }

  function fail(r) { end(r, 'ERROR'); }

  function end(r, status) {
    if (r !== run) return;
    r.finished = true;
    if (r.abort) r.abort.abort();
    clearTimeout(r.pollTimer);
    clearInterval(r.clock);
    tickClock(r);
    setStatus(status);
    ui.cancel.disabled = true;
    ui.submit.disabled = false;
    ui.submit.textContent = 'Generate';
  }

  function renderResults(r, out, inference) {
    ui.progress.value = 1;
    ui.results.textContent = '';
    var images = out.images;
    images.forEach(function (image, index) {
      // Only http(s) URLs and inline images (sync_mode) become links or images.
      if (!image || typeof image.url !== 'string' || !/^(https?:\/\/|data:image\/)/i.test(image.url)) return;
      var figure = el('figure', 'result');
      var link = el('a', 'result-link');
      link.href = image.url;
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
      var img = el('img');
      img.src = image.url;
      img.alt = 'Result ' + (index + 1) + ' of ' + images.length + ' for “' + (out.prompt || ui.prompt.value) + '”';
      if (image.width) img.width = image.width;
      if (image.height) img.height = image.height;
      img.decoding = 'async';
      link.appendChild(img);
      figure.appendChild(link);
      var caption = el('figcaption');
      var facts = [];
      if (image.width && image.height) facts.push(image.width + '×' + image.height);
      if (image.content_type) facts.push(String(image.content_type).replace('image/', '').toUpperCase());
      if (typeof image.file_size === 'number') facts.push(formatBytes(image.file_size));
      caption.appendChild(el('span', '', facts.join(' · ')));
      var open = el('a', '', 'Open');
      open.href = image.url;
      open.target = '_blank';
      open.rel = 'noopener noreferrer';
      open.setAttribute('aria-label', 'Open result ' + (index + 1) + ' in a new tab');
      caption.appendChild(open);
      figure.appendChild(caption);
      ui.results.appendChild(figure);
    });
    var seconds = inference !== null ? inference : (out.timings && typeof out.timings.inference === 'number' ? out.timings.inference : null);
    ui.resultSeed.textContent = out.seed !== undefined ? String(out.seed) : '—';
    ui.resultTime.textContent = seconds !== null ? formatSeconds(seconds) : '—';
    ui.resultMeta.hidden = false;
    var flagged = Array.isArray(out.has_nsfw_concepts) && out.has_nsfw_concepts.some(Boolean);
    showMessage('success', 'Done', images.length + (images.length === 1 ? ' image' : ' images') +
      (seconds !== null ? ' in ' + formatSeconds(seconds) + ' of inference' : '') + ', seed ' + out.seed + '.' +
      (flagged ? ' The safety checker flagged some of them.' : ''));
    addLog('system', 'Result: ' + images.length + (images.length === 1 ? ' image' : ' images'));
    end(r, 'COMPLETED');
  }

  function clearResults() {
    ui.results.textContent = '';
    ui.results.appendChild(el('p', 'gallery-empty', 'The generated images appear here.'));
    ui.resultMeta.hidden = true;
  }

  function tickClock(r) {
    if (r.startedAt) ui.elapsed.textContent = formatSeconds((Date.now() - r.startedAt) / 1000);
  }

  // ---- Submit ----
  function numberValue(id) {
    var raw = $(id).value.trim();
    if (raw === '') return undefined;
    var n = Number(raw);
    return isFinite(n) ? n : raw;
  }

  async function onSubmit(event) {
    event.preventDefault();
    if (run && !run.finished) return;
    clearAllFieldErrors();
    hideMessage();
    var key = ui.key.value.trim();
    if (!key) {
      setFieldError('key', 'Paste your API key or token first.');
      showMessage('error', 'A key is needed', 'Paste your tenant key (or a browser token) in the first field.');
      ui.key.focus();
      return;
    }
    var imageUrl;
    if (source() === 'upload') {
      if (upload.reading) await upload.reading;
      if (!upload.dataUri) {
        setFieldError('image', 'Choose an image file, or switch to Image URL.');
        showMessage('error', 'An input image is needed', 'Upload a file or give an image URL.');
        return;
      }
      imageUrl = upload.dataUri;
    } else {
      imageUrl = ui.imageUrl.value.trim();
    }
    var input = {
      prompt: ui.prompt.value,
      image_url: imageUrl,
      strength: numberValue('strength'),
      num_inference_steps: numberValue('steps'),
      guidance_scale: numberValue('guidance'),
      num_images: numberValue('num-images'),
      output_format: ui.format.value,
      enable_safety_checker: ui.safety.checked,
    };
    var seed = numberValue('seed');
    if (seed !== undefined) input.seed = seed;

    var r = { key: key, seenLogs: {}, lastStatus: null, lastPosition: null, startedAt: Date.now(), finished: false, cancelRequested: false };
    run = r;
    resetLogs();
    clearResults();
    ui.requestId.textContent = '—';
    ui.queuePosition.textContent = '—';
    ui.progress.value = 0;
    ui.elapsed.textContent = '0.0 s';
    r.clock = setInterval(function () { tickClock(r); }, 100);
    setStatus('SUBMITTING');
    ui.submit.disabled = true;
    ui.submit.textContent = 'Generating…';
    addLog('system', 'Submitting to POST /v1/image-to-image');
    // Keep the progress in sight: below the form on a phone, above the fold once the form is scrolled.
    var box = ui.run.getBoundingClientRect();
    if (box.top < 0 || box.top > window.innerHeight - 120) ui.run.scrollIntoView({ block: 'start' });

    var res;
    var body;
    try {
      res = await fetch('/v1/image-to-image', {
        method: 'POST',
        headers: authHeaders(r, { 'content-type': 'application/json', accept: 'application/json' }),
        body: JSON.stringify(input),
      });
      body = await readBody(res);
    } catch (err) {
      if (r !== run) return;
      showNetworkError('submit', err);
      return fail(r);
    }
    if (r !== run) return;
    if (!res.ok || !body || typeof body.request_id !== 'string') {
      showHttpError(res, body, 'submit');
      return fail(r);
    }
    var base = '/v1/requests/' + encodeURIComponent(body.request_id);
    r.id = body.request_id;
    r.urls = {
      status: onThisOrigin(body.status_url, base + '/status'),
      response: onThisOrigin(body.response_url, base),
      cancel: onThisOrigin(body.cancel_url, base + '/cancel'),
    };
    ui.requestId.textContent = body.request_id;
    addLog('system', 'Request ' + body.request_id + ' accepted');
    applyStatus(r, body);
    if (!r.completedStatus) follow(r);
  }

  // ---- Cancel ----
  async function onCancel() {
    var r = run;
    if (!isActive(r) || !r.urls) return;
    r.cancelRequested = true;
    ui.cancel.disabled = true;
    addLog('system', 'Cancelling: PUT ' + r.urls.cancel);
    var res;
    var body;
    try {
      res = await fetch(r.urls.cancel, { method: 'PUT', headers: authHeaders(r) });
      body = await readBody(res);
    } catch (err) {
      if (r !== run) return;
      showNetworkError('cancel', err);
      r.cancelRequested = false;
      ui.cancel.disabled = r.finished;
      return;
    }
    if (r !== run) return;
    var outcome = body && typeof body.status === 'string' ? body.status : '';
    if (res.status === 202) {
      addLog('status', outcome || 'CANCELLATION_REQUESTED');
      if (!r.finished) showMessage('info', 'Cancellation requested', 'The gateway accepted the cancel (' + (outcome || res.status) + '); waiting for the queue to confirm.');
    } else if (res.status === 400 && outcome === 'ALREADY_COMPLETED') {
      addLog('status', outcome);
      showMessage('info', 'Too late to cancel', 'The job had already completed; its result follows.');
    } else {
      showHttpError(res, body, 'cancel');
      r.cancelRequested = false;
      ui.cancel.disabled = r.finished;
    }
  }

  ui.form.addEventListener('submit', onSubmit);
  ui.cancel.addEventListener('click', onCancel);
  window.addEventListener('pagehide', function () { if (run && run.abort) run.abort.abort(); });
  setSource(source());
})();
`;
