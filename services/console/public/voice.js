// The voice messages page: uploads the chosen file as the request body with a progress bar (no
// inline script: the Content Security Policy allows scripts from this origin only), then reloads
// the list. The server checks everything again: size, format (from the bytes), type, language.
(function () {
  const form = document.getElementById('voice-upload');
  if (!form) return;
  const progress = document.getElementById('upload-progress');
  const result = document.getElementById('upload-result');
  const show = (text, ok) => {
    result.textContent = text;
    result.className = ok ? 'notice' : 'problem';
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return show('Choose a .wav or .mp3 file.', false);
    if (file.size > Number(form.dataset.maxBytes)) return show('The file is larger than 1 MB.', false);
    const query = new URLSearchParams({ type: form.elements.type.value, language: form.elements.language.value });
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${form.dataset.action}?${query}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('X-CSRF-Token', form.dataset.csrf);
    progress.hidden = false;
    progress.value = 0;
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener('load', () => {
      let reply = {};
      try {
        reply = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status says enough
      }
      if (xhr.status === 200) {
        progress.value = 100;
        const warnings = (reply.warnings || []).length ? ` (${reply.warnings.join('; ')})` : '';
        show(`Saved: ${reply.type} in ${reply.language}, ${reply.format}, ${reply.durationSeconds} s${warnings}. Reloading…`, true);
        setTimeout(() => window.location.reload(), 600);
      } else if (xhr.status === 413) {
        show('The file is larger than 1 MB.', false);
      } else {
        show((reply.error && reply.error.message) || `Upload failed (${xhr.status}).`, false);
      }
    });
    xhr.addEventListener('error', () => show('The upload did not reach the console; try again.', false));
    xhr.send(file);
  });
})();
