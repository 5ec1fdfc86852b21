// The hardware token pages (no inline script: the Content Security Policy allows scripts from this
// origin only). The import page uploads the chosen file as the request body with a progress bar,
// then starts the import with the file's name in the imports store (and the PSKC password or key,
// which travel only in that second request's body), then goes to the job's page. The job's page
// follows the job every second while it is queued or running. The server checks everything again.
(function () {
  const form = document.getElementById('oath-import');
  if (!form) return;
  const progress = document.getElementById('upload-progress');
  const result = document.getElementById('import-result');
  const keys = document.getElementById('pskc-keys');
  const button = form.querySelector('button[type=submit]');
  const show = (text, ok) => {
    result.textContent = text;
    result.className = ok ? 'notice' : 'problem';
  };
  const formatChanged = () => {
    const pskc = form.elements.format.value === 'pskc';
    keys.hidden = !pskc;
    keys.disabled = !pskc;
  };
  form.elements.format.addEventListener('change', formatChanged);
  form.elements.file.addEventListener('change', () => {
    const file = form.elements.file.files[0];
    if (!file) return;
    if (/\.csv$/i.test(file.name)) form.elements.format.value = 'csv';
    else if (/\.(pskc|xml)$/i.test(file.name)) form.elements.format.value = 'pskc';
    formatChanged();
  });
  formatChanged();

  const errorOf = (status, text) => {
    try {
      const reply = JSON.parse(text);
      if (reply.error && reply.error.message) return reply.error.message;
    } catch {
      // not JSON: the status says enough
    }
    return status === 413 ? 'The file is too large.' : status === 403 ? 'Not allowed: reload the page (your session may have ended).' : `The import failed (${status}).`;
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return show('Choose a CSV or PSKC file.', false);
    if (file.size === 0) return show('The file is empty.', false);
    const maxBytes = Number(form.dataset.maxBytes);
    if (file.size > maxBytes) return show(`The file is larger than ${Math.floor(maxBytes / 1048576)} MiB.`, false);
    const format = form.elements.format.value;
    const password = format === 'pskc' ? form.elements.password.value : '';
    const psk = format === 'pskc' ? form.elements.psk.value.replace(/[\s:]/g, '') : '';
    if (password && psk) return show('Give the password or the pre-shared key, not both.', false);
    if (psk && !/^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64})$/.test(psk)) return show('The pre-shared key must be an AES key in hex: 32, 48 or 64 digits.', false);

    button.disabled = true;
    const failed = (text) => {
      button.disabled = false;
      show(text, false);
    };
    const xhr = new XMLHttpRequest();
    xhr.open('POST', form.dataset.upload);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('X-CSRF-Token', form.dataset.csrf);
    progress.hidden = false;
    progress.value = 0;
    show('Uploading…', true);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener('error', () => failed('The upload did not reach the console; try again.'));
    xhr.addEventListener('load', () => {
      if (xhr.status !== 200) return failed(errorOf(xhr.status, xhr.responseText));
      progress.value = 100;
      let object;
      try {
        object = JSON.parse(xhr.responseText).object;
      } catch {
        return failed('The console answered something unexpected; try again.');
      }
      show('Uploaded. Starting the import…', true);
      const body = new URLSearchParams({ format, object });
      if (password) body.set('password', password);
      if (psk) body.set('psk', psk);
      if (form.elements.replace.checked) body.set('replace', 'on');
      fetch(form.dataset.import, { method: 'POST', body, headers: { 'X-CSRF-Token': form.dataset.csrf }, credentials: 'same-origin' })
        .then(async (response) => {
          const text = await response.text();
          if (!response.ok) return failed(errorOf(response.status, text));
          const reply = JSON.parse(text);
          show('The import is running. Opening its page…', true);
          window.location.assign(reply.location);
        })
        .catch(() => failed('The console did not answer; try again.'));
    });
    xhr.send(file);
  });
})();

(function () {
  const section = document.getElementById('oath-job');
  if (!section || (section.dataset.state !== 'queued' && section.dataset.state !== 'running')) return;
  const progress = document.getElementById('job-progress');
  const text = (id, value) => {
    const element = document.getElementById(id);
    if (element) element.textContent = value;
  };
  let misses = 0;
  const poll = () => {
    fetch(section.dataset.poll, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))))
      .then((job) => {
        misses = 0;
        text('job-state', job.state);
        text('job-imported', String(job.imported));
        text('job-failed', String(job.failed));
        if (job.total > 0) {
          progress.max = job.total;
          progress.value = job.state === 'completed' ? job.total : job.processed;
          text('job-count', `${job.processed} of ${job.total} tokens`);
        }
        // Ended: the page as the server draws a finished job (its error, the error file's link).
        if (job.state === 'completed' || job.state === 'failed') window.location.reload();
        else setTimeout(poll, 1000);
      })
      .catch(() => {
        // A missed answer (a restart, a blip): keep trying, more slowly after a few.
        misses++;
        setTimeout(poll, misses > 5 ? 5000 : 1000);
      });
  };
  setTimeout(poll, 1000);
})();
