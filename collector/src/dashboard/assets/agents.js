// Agents and their health as they last reported it: version, when last heard from (with
// a mark when that is too long ago), spool depth, signals dropped, sources in error.

import * as api from './api.js';
import { h, mount, heading, table, timeCell, number, pill, formatDuration, parseTime, stats, facts, json, input } from './ui.js';

/** Agents send a heartbeat every 30 s by default: three missed ones make an agent stale. */
const STALE_AFTER_MS = 2 * 60 * 1000;

function state(agent, now) {
  if (agent.revoked_at) return 'revoked';
  if (!agent.last_seen) return 'never';
  return now - parseTime(agent.last_seen) > STALE_AFTER_MS ? 'stale' : 'online';
}

const STATE_PILL = {
  online: ['online', 'ok', 'Heard from within the last two minutes'],
  stale: ['stale', 'warn', 'Not heard from for more than two minutes'],
  never: ['never connected', 'warn', 'Enrolled, but has not connected since'],
  revoked: ['revoked', 'bad', 'Its certificate is refused'],
};

export async function render(context) {
  const { main, signal, query } = context;
  const answer = await api.get('/agents', {}, signal);
  const now = Date.now();
  const all = answer.items;
  const counts = { online: 0, stale: 0, never: 0, revoked: 0 };
  for (const agent of all) counts[state(agent, now)] += 1;
  const drops = all.reduce((sum, a) => sum + (a.drops_total || 0), 0);
  const errors = all.reduce((sum, a) => sum + (a.source_errors || []).reduce((n, [, count]) => n + count, 0), 0);

  const filter = input('filter', query.filter, { type: 'search', placeholder: 'organisation, label or id', 'aria-label': 'Filter agents' });
  const results = h('div', { id: 'agent-results' });
  const show = () => {
    const text = filter.value.trim().toLowerCase();
    const rows = all.filter((a) => !text || [a.org, a.label, a.id, a.agent_version || ''].some((v) => v.toLowerCase().includes(text)))
      .sort((a, b) => a.org.localeCompare(b.org) || a.label.localeCompare(b.label));
    mount(results, table({
      caption: 'Agents',
      id: 'agents-table',
      columns: [
        { title: 'Organisation', cell: (a) => a.org },
        { title: 'Label', cell: (a) => h('span', { title: a.id }, a.label || h('code', null, a.id.slice(0, 8))) },
        { title: 'State', cell: (a) => { const [text, kind, title] = STATE_PILL[state(a, now)]; return pill(text, kind, title); } },
        { title: 'Version', cell: (a) => (a.agent_version ? h('code', null, a.agent_version) : h('span', { class: 'muted' }, '—')) },
        { title: 'Last seen', cell: (a) => timeCell(a.last_seen) },
        { title: 'Uptime', cell: (a) => formatDuration(a.uptime_s) },
        { title: 'Spool', numeric: true, cell: (a) => number(a.spool_depth) },
        { title: 'Dropped', numeric: true, cell: (a) => (a.drops_total ? h('strong', { class: 'bad-text' }, number(a.drops_total)) : number(a.drops_total)) },
        {
          title: 'Source errors',
          cell: (a) => (a.source_errors && a.source_errors.length
            ? h('div', { class: 'chips' }, a.source_errors.map(([source, count]) => pill(`${source}: ${count}`, 'warn')))
            : h('span', { class: 'muted' }, 'none')),
        },
      ],
      rows,
      rowClass: (a) => `state-${state(a, now)}`,
      empty: all.length ? 'No agent matches.' : 'No agent has enrolled yet.',
      detail: (a) => h('div', { class: 'signal-detail' },
        facts([
          ['Agent', h('code', null, a.id)],
          ['Certificate', h('code', { class: 'ellipsis' }, a.cert_fingerprint)],
          ['Enrolled', timeCell(a.enrolled_at)],
          a.revoked_at ? ['Revoked', timeCell(a.revoked_at)] : null,
        ]),
        a.inventory ? h('div', null, h('h3', null, 'Host inventory'), json(a.inventory)) : null),
    }));
  };
  filter.addEventListener('input', show);

  mount(main,
    heading('Agents', filter),
    stats([
      ['Agents', number(all.length)],
      ['Online', number(counts.online), 'ok'],
      ['Stale', number(counts.stale + counts.never), counts.stale + counts.never ? 'warn' : ''],
      ['Revoked', number(counts.revoked)],
      ['Signals dropped', number(drops), drops ? 'bad' : ''],
      ['Source errors', number(errors), errors ? 'warn' : ''],
    ]),
    results);
  show();
}
