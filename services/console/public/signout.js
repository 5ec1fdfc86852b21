// Posts the sign-out to the identity provider as soon as the page is shown (no inline script: the
// Content Security Policy allows scripts from this origin only). Without scripts, the button does.
(function () {
  const form = document.getElementById('end-session');
  if (form) form.submit();
})();
