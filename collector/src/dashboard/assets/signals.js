// Signal search with the API's own filters, one page at a time (the store may hold tens
// of millions: the page never asks for a count or for more than one page), following
// the cursor. A member's search is its own organisation's: the API enforces it, and the
// form says so.

import * as api from './api.js';
import { h, mount, heading, pager, field, select, input, link, errorNotice, SEVERITIES, SEVERITY_LABEL } from './ui.js';
import { signalsTable } from './campaigns.js';

const KINDS = [
  'ssh_bruteforce', 'ssh_login_after_failures', 'web_scan', 'web_exploit_attempt', 'file_changed',
  'ransomware_activity', 'port_scan', 'syn_flood', 'ioc_match', 'dns_tunnel_suspected',
  'suspicious_process', 'agent_health',
];
const FILTERS = ['org', 'agent', 'kind', 'severity', 'indicator', 'since', 'until', 'limit'];
const RANGES = [['1h', 'Last hour'], ['24h', '24 hours'], ['7d', '7 days'], ['30d', '30 days']];

export async function render(context) {
  const { main, query, signal, user } = context;
  const member = user.role === 'member';
  const page = Number(query.page || 1);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query[name] || '']));
  if (member) filters.org = user.org || '';
  filters.limit = filters.limit || '50';

  const form = h('form', { class: 'filters', id: 'signal-filters', role: 'search' },
    field('Organisation', input('org', filters.org, { placeholder: 'any', disabled: member, title: member ? 'Members see only their own organisation' : null })),
    field('Kind', input('kind', filters.kind, { placeholder: 'any', list: 'kinds' })),
    field('Minimum severity', select('severity', [['', 'Any'], ...SEVERITIES.map((s) => [s, SEVERITY_LABEL[s]])], filters.severity)),
    field('Indicator', input('indicator', filters.indicator, { placeholder: 'address, domain, hash…', class: 'wide' })),
    field('Agent', input('agent', filters.agent, { placeholder: 'agent id' })),
    field('Since', input('since', filters.since, { placeholder: '24h or 2025-01-31T00:00:00Z' })),
    field('Until', input('until', filters.until, { placeholder: 'now' })),
    field('Rows', select('limit', [['25', '25'], ['50', '50'], ['100', '100'], ['200', '200']], filters.limit)),
    h('div', { class: 'field actions' },
      h('button', { type: 'submit', class: 'button', id: 'search' }, 'Search'),
      h('a', { class: 'button secondary', href: '#/signals' }, 'Reset')),
    h('datalist', { id: 'kinds' }, KINDS.map((k) => h('option', { value: k }))));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    if (member) delete values.org;
    location.hash = link('signals', values);
  });

  const ranges = h('div', { class: 'quick', role: 'group', 'aria-label': 'Time range' },
    h('span', { class: 'muted small' }, 'Since:'),
    RANGES.map(([value, text]) => h('a', {
      class: `chip${filters.since === value ? ' active' : ''}`,
      href: link('signals', { ...query, since: value, cursor: '', page: '' }),
      'aria-current': filters.since === value ? 'true' : null,
    }, text)),
    h('a', { class: `chip${filters.since ? '' : ' active'}`, href: link('signals', { ...query, since: '', cursor: '', page: '' }) }, 'Any time'));

  const exportStatus = h('span', { 'aria-live': 'polite' });
  const exportButton = (format, text) => {
    const button = h('button', { type: 'button', class: 'button secondary small' }, text);
    button.addEventListener('click', async () => {
      mount(exportStatus);
      const { limit, ...rest } = filters;
      try {
        await api.download('/signals', { ...rest, format }, `signals.${format}`);
      } catch (error) {
        mount(exportStatus, errorNotice(error, 'The export'));
      }
    });
    return button;
  };

  const results = h('section', { id: 'signal-results', 'aria-live': 'polite', 'aria-busy': 'true' });
  mount(main,
    heading('Signals', exportButton('csv', 'Export CSV'), exportButton('ndjson', 'Export NDJSON')),
    exportStatus,
    h('p', { class: 'lede' }, member
      ? `The signals your organisation's agents sent (${user.org}). Other organisations' signals are not visible to members.`
      : 'Summarised signals from every member organisation, newest first. Filters combine; severity is a minimum; times are RFC 3339 or a duration ago (24h).'),
    form,
    ranges,
    results);

  const { org, ...others } = filters;
  const answer = await api.get('/signals', { ...others, org: member ? undefined : org, cursor: query.cursor }, signal);
  results.setAttribute('aria-busy', 'false');
  mount(results,
    signalsTable(answer.items, { id: 'signals-table', empty: 'No signal matches these filters.' }),
    pager({
      page,
      count: answer.items.length,
      first: link('signals', { ...query, cursor: '', page: '' }),
      next: answer.next_cursor ? link('signals', { ...query, cursor: answer.next_cursor, page: page + 1 }) : null,
    }));
}
