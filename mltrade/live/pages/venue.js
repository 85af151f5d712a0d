// Shared helpers of the fake venue pages: JSON API calls, session handling, fault injection.
const VENUE = location.pathname.split('/')[1];
async function api(path, body) {
  const opts = body === undefined ? {} : {method: 'POST', headers: {'Content-Type': 'application/json'},
                                           body: JSON.stringify(body)};
  const r = await fetch('/api/' + VENUE + '/' + path, opts);
  if (r.status === 401) { location.href = '/' + VENUE + '/login'; throw new Error('session expired'); }
  return r.json();
}
function fmtEN(x) { if ((window.FAULTS || {}).locale === 'de') return fmtDE0(x); return fmtEN0(x); }
function fmtDE(x) { if ((window.FAULTS || {}).locale === 'en') return fmtEN0(x); return fmtDE0(x); }
function fmtEN0(x) { return Number(x).toLocaleString('en-GB', {minimumFractionDigits: 2, maximumFractionDigits: 2}); }
function fmtDE0(x) { return Number(x).toLocaleString('de-DE', {minimumFractionDigits: 2, maximumFractionDigits: 2}); }
function show(id) { document.getElementById(id).hidden = false; }
function hide(id) { document.getElementById(id).hidden = true; }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function applyFaults() {
  const f = window.FAULTS || {};
  if (f.missing) { const e = document.getElementById(f.missing); if (e) e.remove(); }
}
document.addEventListener('DOMContentLoaded', () => { applyFaults(); document.body.dataset.ready = '1'; });
