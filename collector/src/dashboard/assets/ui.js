// DOM and formatting helpers shared by the pages. Every value from the API enters the
// page as a text node or an attribute, never as markup: nothing it contains can run.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
  return parent;
}

function apply(element, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') element.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key in element && !(element instanceof SVGElement) && typeof value !== 'string') element[key] = value;
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  return element;
}

/** An HTML element: h('a', {href: '#/x', class: 'link'}, 'text', child, [more]). */
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

/** An SVG element. */
export function svg(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

/** Replaces the children of `parent`. */
export function mount(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];
export const SEVERITY_LABEL = { info: 'Info', low: 'Low', medium: 'Medium', high: 'High', critical: 'Critical' };

export function severityBadge(severity) {
  return h('span', { class: `badge sev-${SEVERITIES.includes(severity) ? severity : 'info'}` },
    SEVERITY_LABEL[severity] || String(severity));
}

export function pill(text, kind = 'neutral', title) {
  return h('span', { class: `pill pill-${kind}`, title }, text);
}

/** Milliseconds since the epoch of an RFC 3339 time (nanoseconds cut to milliseconds). */
export function parseTime(text) {
  if (!text) return NaN;
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, '$1'));
}

const pad = (n) => String(n).padStart(2, '0');

/** "2025-03-04 12:34:56" in UTC, the time every partner reads the same way. */
export function formatTime(text, { seconds = true } = {}) {
  const at = parseTime(text);
  if (Number.isNaN(at)) return '—';
  const d = new Date(at);
  const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${seconds ? ':' + pad(d.getUTCSeconds()) : ''}`;
  return `${day} ${time}`;
}

/** "3 min ago", "in 6 d". */
export function relative(text, now = Date.now()) {
  const at = parseTime(text);
  if (Number.isNaN(at)) return '';
  const delta = (at - now) / 1000;
  const span = Math.abs(delta);
  const [value, unit] = span < 60 ? [Math.round(span), 's']
    : span < 3600 ? [Math.round(span / 60), 'min']
      : span < 86400 ? [Math.round(span / 3600), 'h']
        : [Math.round(span / 86400), 'd'];
  if (span < 5) return 'just now';
  return delta < 0 ? `${value} ${unit} ago` : `in ${value} ${unit}`;
}

/** A <time> with the UTC time, its relative age beneath, and the exact value on hover. */
export function timeCell(text, { ago = true } = {}) {
  if (!text) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: text, title: `${text} (UTC)`, class: 'time' },
    formatTime(text),
    ago ? h('span', { class: 'ago' }, relative(text)) : null);
}

/** A duration in seconds, compactly: "3 d 4 h", "12 min". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export const number = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-GB'));

/** An indicator as a compact type + value chip; a link when `href` is given. */
export function indicatorChip(indicator, href) {
  const children = [h('span', { class: 'ind-type' }, indicator.type), h('span', { class: 'ind-value' }, indicator.value)];
  return href
    ? h('a', { class: 'indicator', href, title: `Signals with ${indicator.value}` }, children)
    : h('span', { class: 'indicator' }, children);
}

/** A hash link to `page` with `query` (empty values left out). */
export function link(page, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const text = params.toString();
  return `#/${page}${text ? '?' + text : ''}`;
}

/** A plain statement of what went wrong, where the user looks. */
export function errorNotice(error, what) {
  const status = error && error.status ? ` (HTTP ${error.status})` : '';
  return h('div', { class: 'notice error', role: 'alert' },
    h('strong', null, what ? `${what} failed${status}: ` : `Error${status}: `),
    error && error.message ? error.message : String(error));
}

export function notice(kind, ...children) {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, children);
}

/**
 * A table. `columns`: [{title, cell(row) -> node|text, class, numeric}]; `detail(row)`
 * optionally gives a node shown in a row beneath when the row's toggle is opened;
 * `rowKey(row)` names the row (`data-key`).
 */
export function table({ caption, columns, rows, empty = 'Nothing to show.', detail, rowClass, rowKey, id }) {
  const head = h('thead', null, h('tr', null,
    detail ? h('th', { scope: 'col', class: 'toggle-col' }, h('span', { class: 'sr-only' }, 'Details')) : null,
    columns.map((c) => h('th', { scope: 'col', class: [c.class, c.numeric ? 'num' : null].filter(Boolean).join(' ') || null }, c.title))));
  const body = h('tbody');
  const span = columns.length + (detail ? 1 : 0);
  if (!rows.length) body.append(h('tr', { class: 'empty' }, h('td', { colspan: span }, empty)));
  rows.forEach((row, index) => {
    const tr = h('tr', { class: rowClass ? rowClass(row) : null, 'data-key': rowKey ? rowKey(row) : null });
    let extra = null;
    if (detail) {
      const toggle = h('button', {
        type: 'button', class: 'row-toggle', 'aria-expanded': 'false',
        'aria-label': `Details of row ${index + 1}`,
      }, '▸');
      toggle.addEventListener('click', () => {
        const open = toggle.getAttribute('aria-expanded') === 'true';
        toggle.setAttribute('aria-expanded', String(!open));
        toggle.textContent = open ? '▸' : '▾';
        if (open) { extra.remove(); extra = null; return; }
        extra = h('tr', { class: 'detail-row' }, h('td', { colspan: span }, detail(row)));
        tr.after(extra);
      });
      tr.append(h('td', { class: 'toggle-col' }, toggle));
    }
    for (const c of columns) {
      tr.append(h('td', { class: [c.class, c.numeric ? 'num' : null].filter(Boolean).join(' ') || null }, c.cell(row)));
    }
    body.append(tr);
  });
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'data', id }, caption ? h('caption', { class: 'sr-only' }, caption) : null, head, body));
}

/** Key/value pairs as a definition list (for details and JSON objects). */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([key, value]) => [h('dt', null, key), h('dd', null, value)]));
}

/** A JSON value, pretty-printed as text. */
export function json(value) {
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}

/** "Page N" with links to the first and the next page of a cursor-paginated list. */
export function pager({ page, first, next, count }) {
  return h('nav', { class: 'pager', 'aria-label': 'Pages of results' },
    h('span', { class: 'muted' }, `Page ${page} · ${count} ${count === 1 ? 'row' : 'rows'}`),
    h('span', { class: 'spacer' }),
    page > 1 ? h('a', { class: 'button secondary', href: first }, '⟨ First page') : null,
    next ? h('a', { class: 'button secondary', href: next, rel: 'next', id: 'next-page' }, 'Next page ⟩')
      : h('span', { class: 'muted end' }, 'End of results'));
}

/** A labelled form field. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('small', { class: 'hint' }, hint) : null);
}

export function select(name, options, value) {
  return h('select', { name },
    // defaultSelected: a form's reset() comes back to this choice.
    options.map(([v, text]) => h('option', { value: v, defaultSelected: v === value, selected: v === value }, text)));
}

export function input(name, value, props = {}) {
  return h('input', { name, value: value ?? '', autocomplete: 'off', spellcheck: 'false', ...props });
}

/** A page heading that takes the focus after navigation, for keyboard and screen readers. */
export function heading(text, ...extra) {
  return h('div', { class: 'page-head' },
    h('h1', { tabindex: '-1', id: 'page-title' }, text),
    h('div', { class: 'page-tools' }, extra));
}

/** Summary figures at the top of a page. */
export function stats(items) {
  return h('div', { class: 'stats' }, items.map(([label, value, kind]) =>
    h('div', { class: `stat ${kind || ''}` }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label))));
}
