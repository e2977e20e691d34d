// Advisories: indicators the operations centre pushes to every agent. Everyone who may
// see the page sees the list; analysts and admins publish and withdraw.

import * as api from './api.js';
import {
  h, mount, heading, table, pager, field, select, input, link, severityBadge, indicatorChip,
  timeCell, pill, errorNotice, notice, parseTime, SEVERITIES, SEVERITY_LABEL,
} from './ui.js';

const PAGE_SIZE = 100;
/** What agents can match (user and port indicators cannot be advised). */
const TYPES = [['ip', 'IP address'], ['cidr', 'Network (CIDR)'], ['domain', 'Domain'], ['url', 'URL'], ['sha256', 'SHA-256']];
const LIVES = [['1d', '1 day'], ['7d', '7 days'], ['30d', '30 days'], ['90d', '90 days'], ['365d', '1 year']];
/** The collector's limit on a description (protocol MAX_ADVISORY_TEXT). */
const MAX_TEXT = 512;

function statusOf(advisory, now) {
  if (advisory.withdrawn_at) return pill('withdrawn', 'neutral', `Withdrawn ${advisory.withdrawn_at}`);
  if (parseTime(advisory.expires_at) <= now) return pill('expired', 'neutral');
  return pill('in force', 'ok');
}

function publishForm(context, onPublished) {
  const { query } = context;
  const status = h('div', { id: 'publish-status', 'aria-live': 'polite' });
  const description = h('textarea', {
    name: 'description', rows: 3, maxlength: MAX_TEXT, id: 'advisory-description',
    placeholder: 'What it is and what to do: seen brute-forcing SSH at three members; block at the perimeter.',
  });
  const form = h('form', { class: 'card publish', id: 'publish-form', 'aria-labelledby': 'publish-title' },
    h('h2', { id: 'publish-title' }, 'Publish an advisory'),
    h('p', { class: 'muted small' }, 'It reaches every connected agent within seconds, and agents that are offline when they reconnect. Agents report a match as an ioc_match signal.'),
    h('div', { class: 'form-grid' },
      field('Indicator type', select('type', TYPES, query.type || 'ip')),
      field('Value', input('value', query.value, { required: true, placeholder: '203.0.113.7', class: 'wide', id: 'advisory-value' })),
      field('Severity', select('severity', SEVERITIES.map((s) => [s, SEVERITY_LABEL[s]]), query.severity || 'high')),
      field('In force for', select('expires_in', LIVES, '7d'))),
    field('Description', description, `At most ${MAX_TEXT} bytes; shown to members and sent to agents.`),
    h('div', { class: 'form-actions' },
      h('button', { type: 'submit', class: 'button', id: 'publish' }, 'Publish to all agents'),
      status));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    mount(status, h('span', { class: 'muted' }, 'Publishing…'));
    try {
      const record = await api.post('/advisories', {
        indicator: { type: values.type, value: values.value.trim() },
        severity: values.severity,
        description: values.description.trim(),
        expires_in: values.expires_in,
      });
      form.reset();
      mount(status, notice('ok', 'Published ', h('code', { id: 'published-id' }, record.id), ` (${record.indicator.type} ${record.indicator.value}).`));
      onPublished(record);
    } catch (error) {
      mount(status, errorNotice(error, 'Publishing'));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Withdraw in two clicks, without a modal dialog: the first asks, the second does. */
function withdrawButton(advisory, onDone) {
  const button = h('button', { type: 'button', class: 'button danger small' }, 'Withdraw');
  let armed = null;
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = 'Confirm withdrawal';
      armed = setTimeout(() => { armed = null; button.textContent = 'Withdraw'; }, 5000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    try {
      await api.remove(`/advisories/${encodeURIComponent(advisory.id)}`);
      onDone(null);
    } catch (error) {
      onDone(error);
    }
  });
  return button;
}

export async function render(context) {
  const { main, query, signal, user } = context;
  const publisher = ['admin', 'analyst'].includes(user.role);
  const all = query.all === 'true';
  const page = Number(query.page || 1);
  const results = h('section', { id: 'advisory-results', 'aria-labelledby': 'list-title' });
  const flash = h('div', { 'aria-live': 'polite' });

  const load = async () => {
    const answer = await api.get('/advisories', { all: all ? 'true' : undefined, cursor: query.cursor, limit: PAGE_SIZE }, signal);
    const now = Date.now();
    mount(results,
      h('div', { class: 'section-head' },
        h('h2', { id: 'list-title' }, all ? 'All advisories' : 'Advisories in force'),
        h('a', { class: 'chip', href: link('advisories', { all: all ? '' : 'true' }), id: 'toggle-all' },
          all ? 'Show only those in force' : 'Include expired and withdrawn')),
      table({
        caption: 'Advisories',
        id: 'advisories-table',
        columns: [
          { title: '#', numeric: true, cell: (a) => String(a.seq) },
          { title: 'Severity', cell: (a) => severityBadge(a.severity) },
          { title: 'Indicator', cell: (a) => indicatorChip(a.indicator, publisher ? link('signals', { indicator: a.indicator.value }) : null) },
          { title: 'Description', class: 'text', cell: (a) => a.description || h('span', { class: 'muted' }, '—') },
          { title: 'Published', cell: (a) => h('div', null, timeCell(a.published_at), h('span', { class: 'muted small' }, `by ${a.published_by}`)) },
          { title: 'Expires', cell: (a) => timeCell(a.expires_at) },
          { title: 'Status', cell: (a) => statusOf(a, now) },
          publisher ? {
            title: h('span', { class: 'sr-only' }, 'Actions'),
            cell: (a) => (!a.withdrawn_at && parseTime(a.expires_at) > now
              ? withdrawButton(a, (error) => (error ? mount(flash, errorNotice(error, 'Withdrawing')) : load()))
              : ''),
          } : null,
        ].filter(Boolean),
        rows: answer.items,
        empty: all ? 'No advisory has been published.' : 'No advisory is in force.',
      }),
      pager({
        page,
        count: answer.items.length,
        first: link('advisories', { ...query, cursor: '', page: '' }),
        next: answer.next_cursor ? link('advisories', { ...query, cursor: answer.next_cursor, page: page + 1 }) : null,
      }));
  };

  mount(main,
    heading('Advisories'),
    h('p', { class: 'lede' }, publisher
      ? 'Indicators of compromise pushed to every member agent, which matches them locally against logs, traffic and new files. Listed in the order they were published.'
      : 'Indicators of compromise the operations centre has pushed to your agents, which match them locally against logs, traffic and new files.'),
    publisher ? publishForm(context, () => load().catch((error) => mount(flash, errorNotice(error, 'Refreshing')))) : null,
    flash,
    results);
  await load();
}
