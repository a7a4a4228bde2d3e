// The culling gallery: flags and stars by keyboard (as in Lightroom), sort, score filter, export.
(() => {
  const grid = document.getElementById('all');
  const cards = [...grid.querySelectorAll('.card')];
  const KEY = 'iaa-cull:' + document.body.dataset.key;
  const low = document.getElementById('min-score'), high = document.getElementById('max-score');
  const sortBy = document.getElementById('sort'), box = document.getElementById('lightbox');
  let saved = {}, current = null;
  try { saved = JSON.parse(localStorage.getItem(KEY) || '{}'); } catch (e) { saved = {}; }

  function show(card) {
    const flag = card.dataset.flag, rating = +card.dataset.rating;
    card.classList.toggle('picked', flag === 'pick');
    card.classList.toggle('rejected', flag === 'reject');
    const stars = Math.min(Math.max(rating, 0), 5);  // every tier has stars; 0 = not rated
    card.querySelector('.stars').textContent = stars ? '\u2605'.repeat(stars) + '\u2606'.repeat(5 - stars) : '';
    card.querySelector('.flag').textContent = flag;  // pick, unflagged or reject
    card.querySelector('.flag').title = card.dataset.reason || '';
  }
  function twins(path) { return document.querySelectorAll('.card[data-path="' + CSS.escape(path) + '"]'); }
  function decide(card, change) {
    if (!card) return;
    const path = card.dataset.path;
    twins(path).forEach(c => { Object.assign(c.dataset, change, {edited: '1'}); show(c); });
    saved[path] = {flag: card.dataset.flag, rating: card.dataset.rating};
    localStorage.setItem(KEY, JSON.stringify(saved));
    count();
  }
  function count() {
    const shown = cards.filter(c => !c.hidden);
    document.getElementById('counts').textContent = shown.length + ' shown, ' +
      cards.filter(c => c.dataset.flag === 'pick').length + ' picks, ' +
      cards.filter(c => c.dataset.flag === 'unflagged').length + ' unflagged, ' +
      cards.filter(c => c.dataset.flag === 'reject').length + ' rejects';
  }
  function filter() {
    const a = Math.min(+low.value, +high.value), b = Math.max(+low.value, +high.value);
    const places = +low.dataset.decimals;
    document.getElementById('range').textContent = a.toFixed(places) + ' \u2013 ' + b.toFixed(places);
    cards.forEach(c => { const s = +c.dataset.score, out = s < a - 1e-9 || s > b + 1e-9; if (c.hidden !== out) c.hidden = out; });
    count();
  }
  function groupValue(card, key, groups) {
    const value = c => key === 'score' ? -c.dataset.score : key === 'time' ? (c.dataset.time === '' ? Infinity : +c.dataset.time) : c.dataset.name;
    const members = groups[card.dataset.burst] || [card];
    return members.map(value).sort((x, y) => x < y ? -1 : x > y ? 1 : 0)[0];
  }
  function sort() {
    const key = sortBy.value, groups = {};
    cards.forEach(c => { if (c.dataset.burst) (groups[c.dataset.burst] = groups[c.dataset.burst] || []).push(c); });
    const keyed = cards.map(c => [groupValue(c, key, groups), c.dataset.burst || c.dataset.path, -c.dataset.score, c]);
    keyed.sort((x, y) => { for (let i = 0; i < 3; i++) { if (x[i] < y[i]) return -1; if (x[i] > y[i]) return 1; } return 0; });
    cards.splice(0, cards.length, ...keyed.map(k => k[3]));
    grid.replaceChildren(...cards);
  }
  function select(card) {
    if (!card) return;
    if (current) current.classList.remove('current');
    current = card; card.classList.add('current'); card.focus({preventScroll: true});
    card.scrollIntoView({block: 'nearest'});
    if (!box.hidden) enlarge(card);
  }
  function enlarge(card) {
    box.querySelector('img').src = card.dataset.full || card.querySelector('img')?.src || '';
    box.querySelector('p').textContent = card.dataset.path + ' \u2014 ' + (+card.dataset.score).toFixed(+low.dataset.decimals);
    box.hidden = false;
  }
  function perRow(shown) { return Math.max(1, shown.filter(c => c.offsetTop === shown[0].offsetTop).length); }
  function move(step) {
    const shown = cards.filter(c => !c.hidden), i = shown.indexOf(current);
    const delta = Math.abs(step) === 2 ? Math.sign(step) * perRow(shown) : step;
    select(i < 0 ? shown[0] : shown[Math.min(shown.length - 1, Math.max(0, i + delta))]);
  }
  const KEYS = {ArrowRight: () => move(1), ArrowLeft: () => move(-1), ArrowDown: () => move(2), ArrowUp: () => move(-2),
    p: () => decide(current, {flag: 'pick'}), x: () => decide(current, {flag: 'reject'}), u: () => decide(current, {flag: 'unflagged'}),
    Enter: () => current && enlarge(current), ' ': () => current && enlarge(current), Escape: () => { box.hidden = true; }};
  document.addEventListener('keydown', e => {
    if (['INPUT', 'SELECT', 'BUTTON'].includes(e.target.tagName) && !e.key.startsWith('Arrow') || e.ctrlKey || e.metaKey) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if ('012345'.includes(key) && key.length === 1) decide(current, {rating: key});
    else if (KEYS[key]) KEYS[key](); else return;
    e.preventDefault();
  });
  function csvField(text) { return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }
  function download(name, text) {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([text], {type: 'text/plain'}));
    link.download = name; document.body.appendChild(link); link.click(); link.remove();
  }
  function exportCsv() {
    const rows = [['path', 'score', 'flag', 'rating', 'burst', 'reason']];
    cards.forEach(c => rows.push([c.dataset.path, c.dataset.score, c.dataset.flag,
      c.dataset.rating, c.dataset.burst, c.dataset.edited ? 'set in the gallery' : c.dataset.reason]));
    download('decisions.csv', rows.map(r => r.map(csvField).join(',')).join('\n') + '\n');
  }
  function exportTxt() {
    download('picks.txt', cards.filter(c => c.dataset.flag === 'pick').map(c => c.dataset.path).join('\n') + '\n');
  }

  document.querySelectorAll('.card').forEach(c => {
    if (saved[c.dataset.path]) Object.assign(c.dataset, saved[c.dataset.path], {edited: '1'});
    show(c);
    c.addEventListener('click', () => { select(grid.contains(c) ? c : cards.find(o => o.dataset.path === c.dataset.path)); enlarge(c); });
  });
  box.addEventListener('click', () => { box.hidden = true; });
  low.addEventListener('input', filter); high.addEventListener('input', filter);
  sortBy.addEventListener('change', () => { sort(); filter(); });
  document.getElementById('export-csv').addEventListener('click', exportCsv);
  document.getElementById('export-txt').addEventListener('click', exportTxt);
  document.getElementById('reset').addEventListener('click', () => { localStorage.removeItem(KEY); location.reload(); });
  sort(); filter();
})();
