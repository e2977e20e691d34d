// The audit trail: whether the hash chain verifies, and its entries (who did what, with
// which parameters, with what result), filtered and paged; exports for the record.

import * as api from './api.js';
import { h, mount, heading, table, pager, field, input, link, timeCell, pill, errorNotice, notice, facts, json, number } from './ui.js';

const FILTERS = ['actor', 'action', 'since', 'until', 'limit'];

async function verification(signal) {
  try {
    const result = await api.get('/audit/verify', {}, signal);
    if (result.ok) {
      return notice('ok verify', h('strong', null, 'Chain verified. '),
        `${number(result.entries)} entries, each linked to the one before by its hash`,
        result.head ? ['; the newest is ', h('code', { title: result.head.hash }, `#${result.head.seq} ${String(result.head.hash).slice(0, 16)}…`)] : '.');
    }
    const problem = result.problem || {};
    return notice('error verify', h('strong', null, 'The audit chain does not verify. '),
      problem.seq !== undefined ? `Entry #${problem.seq}: ` : '',
      problem.kind ? h('code', null, problem.kind) : '', ' ', problem.message || '',
      ` (${number(result.entries)} entries checked).`);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    return errorNotice(error, 'Verifying the audit chain');
  }
}

function outcome(entry) {
  if (entry.status === null || entry.status === undefined) return h('span', { class: 'muted' }, '—');
  const kind = entry.status < 300 ? 'ok' : entry.status < 500 ? 'warn' : 'bad';
  return pill(String(entry.status), kind);
}

export async function render(context) {
  const { main, query, signal } = context;
  const page = Number(query.page || 1);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query[name] || '']));
  filters.limit = filters.limit || '100';

  const form = h('form', { class: 'filters', id: 'audit-filters', role: 'search' },
    field('Actor', input('actor', filters.actor, { placeholder: 'user name' })),
    field('Action', input('action', filters.action, { placeholder: 'api.read, advisory.publish…' })),
    field('Since', input('since', filters.since, { placeholder: '24h or RFC 3339' })),
    field('Until', input('until', filters.until, { placeholder: 'now' })),
    h('div', { class: 'field actions' },
      h('button', { type: 'submit', class: 'button' }, 'Filter'),
      h('a', { class: 'button secondary', href: '#/audit' }, 'Reset')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = link('audit', Object.fromEntries(new FormData(form)));
  });

  const exportStatus = h('span', { 'aria-live': 'polite' });
  const exportButton = (format, text) => {
    const button = h('button', { type: 'button', class: 'button secondary small', id: `audit-export-${format}` }, text);
    button.addEventListener('click', async () => {
      mount(exportStatus);
      const { limit, ...rest } = filters;
      try {
        await api.download('/audit', { ...rest, format }, `audit.${format}`);
      } catch (error) {
        mount(exportStatus, errorNotice(error, 'The export'));
      }
    });
    return button;
  };

  const banner = h('div', { id: 'audit-verify' }, h('p', { class: 'muted' }, 'Verifying the chain…'));
  const results = h('section', { id: 'audit-results' });
  mount(main,
    heading('Audit log', exportButton('csv', 'Export CSV'), exportButton('ndjson', 'Export NDJSON')),
    exportStatus,
    banner,
    h('p', { class: 'lede' }, 'Every API call and administrative act, in order, hash-chained so that any change to a past entry breaks verification.'),
    form,
    results);

  const [check, answer] = await Promise.all([
    verification(signal),
    api.get('/audit', { ...filters, cursor: query.cursor }, signal).catch((error) => error),
  ]);
  mount(banner, check);
  if (answer instanceof Error) {
    if (answer.name === 'AbortError') throw answer;
    mount(results, answer.status === 404
      ? notice('info', 'This collector does not serve the audit log yet.')
      : errorNotice(answer, 'Reading the audit log'));
    return;
  }
  mount(results,
    table({
      caption: 'Audit entries',
      id: 'audit-table',
      columns: [
        { title: '#', numeric: true, cell: (e) => String(e.seq) },
        { title: 'Time', cell: (e) => timeCell(e.at) },
        { title: 'Actor', cell: (e) => h('a', { href: link('audit', { ...query, actor: e.actor, cursor: '', page: '' }) }, e.actor) },
        { title: 'Role', cell: (e) => (e.role ? pill(e.role, 'role') : h('span', { class: 'muted' }, '—')) },
        { title: 'Action', cell: (e) => h('a', { href: link('audit', { ...query, action: e.action, cursor: '', page: '' }) }, h('code', null, e.action)) },
        { title: 'Route', cell: (e) => (e.route ? h('code', { class: 'ellipsis route', title: e.route }, e.route) : h('span', { class: 'muted' }, '—')) },
        { title: 'Status', cell: outcome },
        { title: 'Results', numeric: true, cell: (e) => number(e.results) },
        { title: 'Hash', cell: (e) => h('code', { class: 'muted', title: e.hash }, String(e.hash || '').slice(0, 12)) },
      ],
      rows: answer.items,
      empty: 'No entry matches these filters.',
      detail: (e) => h('div', { class: 'signal-detail' },
        facts([
          ['Entry', `#${e.seq}`],
          ['Hash', h('code', null, e.hash)],
        ]),
        e.params ? h('div', null, h('h3', null, 'Parameters'), json(e.params)) : null,
        e.detail ? h('div', null, h('h3', null, 'Detail'), json(e.detail)) : null),
    }),
    pager({
      page,
      count: answer.items.length,
      first: link('audit', { ...query, cursor: '', page: '' }),
      next: answer.next_cursor ? link('audit', { ...query, cursor: answer.next_cursor, page: page + 1 }) : null,
    }));
}
