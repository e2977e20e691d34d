// Campaigns: indicators seen at several organisations. The list (one page at a time,
// refreshed live as campaigns open and grow) and a campaign's own page with its timeline
// across organisations and its newest signals.

import * as api from './api.js';
import {
  h, mount, heading, table, pager, field, select, input, link, severityBadge, indicatorChip,
  timeCell, number, pill, errorNotice, notice, facts, stats, formatDuration, parseTime, json,
  SEVERITIES, SEVERITY_LABEL,
} from './ui.js';
import { timeline } from './timeline.js';

const PAGE_SIZE = 50;

export async function render(context) {
  if (context.rest.length) return renderCampaign(context, context.rest[0]);
  return renderList(context);
}

function filtersForm(query) {
  const form = h('form', { class: 'filters', id: 'campaign-filters', role: 'search' },
    field('Status', select('status', [['open', 'Open'], ['closed', 'Closed'], ['all', 'All']], query.status || 'open')),
    field('Minimum severity', select('severity', [['', 'Any'], ...SEVERITIES.map((s) => [s, SEVERITY_LABEL[s]])], query.severity || '')),
    field('Organisation', input('org', query.org, { placeholder: 'any' })),
    field('Indicator', input('indicator', query.indicator, { placeholder: 'address, domain, hash…', class: 'wide' })),
    h('div', { class: 'field actions' },
      h('button', { type: 'submit', class: 'button' }, 'Filter'),
      h('a', { class: 'button secondary', href: '#/campaigns' }, 'Reset')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    location.hash = link('campaigns', values);
  });
  return form;
}

function orgsCell(campaign) {
  const names = campaign.orgs.map((o) => o.org);
  const shown = names.slice(0, 4).map((name) => pill(name, 'org'));
  return h('div', { class: 'chips' }, shown, names.length > 4 ? pill(`+${names.length - 4}`, 'neutral', names.slice(4).join(', ')) : null);
}

function scoreCell(score) {
  const meter = h('span', { class: 'score-bar' }, h('span', { class: 'score-fill' }));
  meter.firstChild.style.width = `${Math.max(0, Math.min(100, score))}%`;
  return h('span', { class: 'score', title: `Score ${score} of 100` }, h('span', { class: 'score-value' }, String(score)), meter);
}

async function renderList(context) {
  const { main, query, signal } = context;
  const page = Number(query.page || 1);
  const filters = {
    status: query.status || 'open',
    severity: query.severity,
    org: query.org,
    indicator: query.indicator,
    limit: PAGE_SIZE,
  };
  const results = h('section', { 'aria-labelledby': 'page-title', id: 'campaign-results' });
  const updated = h('span', { class: 'muted small', 'aria-live': 'polite' });
  mount(main,
    heading('Campaigns', updated),
    h('p', { class: 'lede' }, 'An indicator seen at several member organisations within the correlation window. Open a campaign for its timeline and signals.'),
    filtersForm(query),
    results);

  const load = async () => {
    const answer = await api.get('/campaigns', { ...filters, cursor: query.cursor }, signal);
    const rows = answer.items;
    mount(results,
      table({
        caption: 'Campaigns',
        id: 'campaigns-table',
        columns: [
          { title: 'Severity', cell: (c) => severityBadge(c.severity) },
          {
            title: 'Indicator',
            cell: (c) => h('a', { class: 'row-link', href: `#/campaigns/${encodeURIComponent(c.id)}`, dataset: { campaign: c.id } },
              indicatorChip(c.indicator)),
          },
          { title: 'Score', cell: (c) => scoreCell(c.score) },
          { title: 'Organisations', cell: orgsCell },
          { title: 'Kinds', cell: (c) => h('div', { class: 'chips' }, c.kinds.map((k) => h('code', { class: 'kind' }, k))) },
          { title: 'Signals', numeric: true, cell: (c) => number(c.signals) },
          { title: 'First seen', cell: (c) => timeCell(c.first_seen) },
          { title: 'Last seen', cell: (c) => timeCell(c.last_seen) },
          { title: 'Status', cell: (c) => pill(c.status, c.status === 'open' ? 'open' : 'neutral') },
        ],
        rows,
        rowKey: (c) => c.id,
        rowClass: (c) => `clickable sev-row-${c.severity}`,
        empty: filters.status === 'open' && !query.org && !query.indicator && !query.severity
          ? 'No open campaigns: no indicator is shared by enough organisations right now.'
          : 'No campaign matches these filters.',
      }),
      pager({
        page,
        count: rows.length,
        first: link('campaigns', { ...query, cursor: '', page: '' }),
        next: answer.next_cursor ? link('campaigns', { ...query, cursor: answer.next_cursor, page: page + 1 }) : null,
      }));
    // The whole row opens the campaign; the link in it is what the keyboard uses.
    results.querySelectorAll('tr.clickable').forEach((tr) => tr.addEventListener('click', (event) => {
      const anchor = tr.querySelector('a.row-link');
      if (anchor && !event.target.closest('a, button')) location.hash = anchor.getAttribute('href');
    }));
    updated.textContent = `Updated ${new Date().toLocaleTimeString('en-GB')}`;
  };
  await load();

  // Live: the first page follows campaigns as the correlator opens and grows them.
  if (!query.cursor) {
    let pending = null;
    context.onLive((name) => {
      if (!name.startsWith('campaign_') || pending) return;
      pending = setTimeout(() => {
        pending = null;
        if (!signal.aborted) load().catch((error) => error.name !== 'AbortError' && mount(results, errorNotice(error, 'Refreshing')));
      }, 750);
    });
  }
}

async function renderCampaign(context, id) {
  const { main, signal, user } = context;
  const answer = await api.get(`/campaigns/${encodeURIComponent(id)}`, {}, signal);
  const { campaign, signals } = answer;
  const span = (parseTime(campaign.last_seen) - parseTime(campaign.first_seen)) / 1000;
  const value = campaign.indicator.value;
  const publisher = ['admin', 'analyst'].includes(user.role);
  const exportStatus = h('span', { 'aria-live': 'polite' });
  const exportButton = h('button', { type: 'button', class: 'button secondary', id: 'export-stix' }, 'Export STIX 2.1');
  exportButton.addEventListener('click', async () => {
    mount(exportStatus);
    try {
      await api.download('/export/stix', { campaign: campaign.id }, `campaign-${campaign.id}.stix.json`);
    } catch (error) {
      mount(exportStatus, errorNotice(error, 'The STIX export'));
    }
  });

  mount(main,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/campaigns' }, 'Campaigns'), ' / ', h('span', null, campaign.id)),
    heading(h('span', { class: 'title-indicator' }, severityBadge(campaign.severity), indicatorChip(campaign.indicator)),
      h('a', { class: 'button secondary', href: link('signals', { indicator: value }) }, 'All signals with this indicator'),
      publisher ? h('a', { class: 'button', href: link('advisories', { type: campaign.indicator.type, value, severity: campaign.severity }), id: 'advise' }, 'Publish an advisory') : null,
      exportButton),
    exportStatus,
    stats([
      ['Organisations', number(campaign.orgs.length)],
      ['Signals', number(campaign.signals)],
      ['Score', `${campaign.score} / 100`],
      ['Active for', formatDuration(span)],
      ['Status', campaign.status === 'open' ? 'Open' : 'Closed', campaign.status],
    ]),
    h('section', { class: 'card', 'aria-labelledby': 'timeline-title' },
      h('h2', { id: 'timeline-title' }, 'Timeline'),
      h('p', { class: 'muted small' },
        'One lane per organisation: the line spans the first and last sighting, each mark is a signal (its length is the time it summarises, its colour its severity).',
        signals.length >= 100 ? ' The newest 100 signals are drawn.' : ''),
      timeline(campaign, signals)),
    h('div', { class: 'two-col' },
      h('section', { class: 'card', 'aria-labelledby': 'orgs-title' },
        h('h2', { id: 'orgs-title' }, 'Organisations'),
        table({
          caption: 'Organisations touched',
          columns: [
            { title: 'Organisation', cell: (o) => h('a', { href: link('signals', { org: o.org, indicator: value }) }, o.org) },
            { title: 'Signals', numeric: true, cell: (o) => number(o.signals) },
            { title: 'First seen', cell: (o) => timeCell(o.first_seen, { ago: false }) },
            { title: 'Last seen', cell: (o) => timeCell(o.last_seen) },
          ],
          rows: campaign.orgs,
        })),
      h('section', { class: 'card', 'aria-labelledby': 'facts-title' },
        h('h2', { id: 'facts-title' }, 'Campaign'),
        facts([
          ['Identifier', h('code', null, campaign.id)],
          ['Kinds of signal', h('div', { class: 'chips' }, campaign.kinds.map((k) => h('code', { class: 'kind' }, k)))],
          ['First seen', timeCell(campaign.first_seen)],
          ['Last seen', timeCell(campaign.last_seen)],
          ['Opened', timeCell(campaign.opened_at)],
          ['Updated', timeCell(campaign.updated_at)],
          campaign.closed_at ? ['Closed', timeCell(campaign.closed_at)] : null,
        ]))),
    h('section', { class: 'card', 'aria-labelledby': 'signals-title' },
      h('h2', { id: 'signals-title' }, `Newest signals (${signals.length} of ${number(campaign.signals)})`),
      signalsTable(signals)));

  context.onLive((name, data) => {
    if (name.startsWith('campaign_') && data.campaign && data.campaign.id === campaign.id) {
      const note = document.getElementById('campaign-changed');
      if (!note) {
        main.insertBefore(notice('info', 'This campaign has changed. ', h('a', { href: location.hash, id: 'campaign-changed', onclick: (event) => { event.preventDefault(); renderCampaign(context, id); } }, 'Show the new state')), main.children[2]);
      }
    }
  });
}

/** Signals as a table, shared with the signals page. */
export function signalsTable(rows, { empty = 'No signals.', id } = {}) {
  return table({
    caption: 'Signals',
    id,
    columns: [
      { title: 'Last seen', cell: (s) => timeCell(s.last_seen) },
      { title: 'Severity', cell: (s) => severityBadge(s.severity) },
      { title: 'Kind', cell: (s) => h('a', { href: link('signals', { kind: s.kind }), class: 'kind-link' }, h('code', { class: 'kind' }, s.kind)) },
      { title: 'Organisation', cell: (s) => h('a', { href: link('signals', { org: s.org }) }, s.org) },
      {
        title: 'Indicators',
        cell: (s) => h('div', { class: 'chips' }, s.indicators.slice(0, 3).map((i) => indicatorChip(i, link('signals', { indicator: i.value }))),
          s.indicators.length > 3 ? pill(`+${s.indicators.length - 3}`) : null),
      },
      { title: 'Events', numeric: true, cell: (s) => number(s.count) },
      { title: 'ATT&CK', cell: (s) => (s.mitre ? h('code', null, s.mitre) : h('span', { class: 'muted' }, '—')) },
      { title: 'Host', cell: (s) => (s.host ? h('span', { class: 'mono ellipsis', title: s.host }, s.host) : h('span', { class: 'muted' }, '—')) },
    ],
    rows,
    empty,
    rowKey: (s) => s.id,
    detail: (s) => h('div', { class: 'signal-detail' },
      facts([
        ['Signal', h('code', null, s.id)],
        ['Agent', h('a', { href: link('signals', { agent: s.agent_id }) }, h('code', null, s.agent_id))],
        ['First seen', timeCell(s.first_seen)],
        ['Last seen', timeCell(s.last_seen)],
        ['Received', timeCell(s.received_at)],
        ['Indicators', h('div', { class: 'chips' }, s.indicators.map((i) => indicatorChip(i, link('signals', { indicator: i.value }))))],
      ]),
      Object.keys(s.attributes || {}).length ? h('div', null, h('h3', null, 'Attributes'), json(s.attributes)) : null),
  });
}
