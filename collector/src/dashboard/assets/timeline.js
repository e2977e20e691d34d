// A campaign's timeline as SVG: one lane per organisation, the lane's line from the
// organisation's first to its last sighting, and each signal a mark from its first to
// its last event, coloured by severity. Drawn from data already on the page: no request.

import { svg, h, parseTime, formatTime, SEVERITIES } from './ui.js';

const WIDTH = 1000;
const LABEL = 170; // room for the organisation names
const RIGHT = 24;
const TOP = 34;
const LANE = 40;
const AXIS = 30;

function ticks(start, end, count) {
  const steps = [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400]
    .map((s) => s * 1000);
  const step = steps.find((s) => (end - start) / s <= count) || steps[steps.length - 1];
  const out = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) out.push(t);
  return { out, step };
}

function tickLabel(at, step) {
  const text = formatTime(new Date(at).toISOString());
  if (step >= 86400 * 1000) return text.slice(5, 10);
  if (step >= 60 * 1000) return text.slice(11, 16);
  return text.slice(11, 19);
}

export function timeline(campaign, signals) {
  const lanes = [...campaign.orgs]
    .sort((a, b) => parseTime(a.first_seen) - parseTime(b.first_seen) || a.org.localeCompare(b.org));
  const times = [campaign.first_seen, campaign.last_seen, ...signals.flatMap((s) => [s.first_seen, s.last_seen])]
    .map(parseTime).filter((t) => !Number.isNaN(t));
  let start = Math.min(...times);
  let end = Math.max(...times);
  const margin = Math.max((end - start) * 0.03, 30_000);
  start -= margin;
  end += margin;
  const height = TOP + lanes.length * LANE + AXIS;
  const x = (t) => LABEL + ((t - start) / (end - start)) * (WIDTH - LABEL - RIGHT);

  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${height}`, class: 'timeline', role: 'img', id: 'timeline',
    'aria-label': `Timeline of ${lanes.length} organisations from ${formatTime(campaign.first_seen)} to ${formatTime(campaign.last_seen)} UTC`,
  });

  // Lane backgrounds first, so that the grid lines show across them.
  lanes.forEach((lane, index) => {
    root.append(svg('rect', { x: 0, y: TOP + index * LANE + 2, width: WIDTH, height: LANE - 4, class: index % 2 ? 'tl-band odd' : 'tl-band' }));
  });

  // Grid and time axis.
  const { out, step } = ticks(start, end, 8);
  const axisY = TOP + lanes.length * LANE + 6;
  for (const t of out) {
    root.append(
      svg('line', { x1: x(t), x2: x(t), y1: TOP - 6, y2: axisY, class: 'tl-grid' }),
      svg('text', { x: x(t), y: axisY + 16, class: 'tl-tick', 'text-anchor': 'middle' }, tickLabel(t, step)));
  }
  root.append(svg('text', { x: WIDTH - RIGHT, y: 16, class: 'tl-tick', 'text-anchor': 'end' }, `UTC, ${formatTime(new Date(start).toISOString()).slice(0, 10)}`));

  // When the correlator opened the campaign.
  const opened = parseTime(campaign.opened_at);
  if (opened >= start && opened <= end) {
    root.append(
      svg('line', { x1: x(opened), x2: x(opened), y1: TOP - 14, y2: axisY, class: 'tl-opened' }),
      svg('text', { x: x(opened) + 4, y: TOP - 16, class: 'tl-opened-label' }, 'campaign opened'));
  }

  lanes.forEach((lane, index) => {
    const y = TOP + index * LANE;
    const mid = y + LANE / 2;
    const group = svg('g', { class: 'tl-lane', 'data-org': lane.org });
    group.append(
      svg('text', { x: 10, y: mid - 2, class: 'tl-org' }, lane.org.length > 20 ? `${lane.org.slice(0, 19)}…` : lane.org),
      svg('text', { x: 10, y: mid + 12, class: 'tl-count' }, `${lane.signals} signal${lane.signals === 1 ? '' : 's'}`),
      svg('line', { x1: x(parseTime(lane.first_seen)), x2: x(parseTime(lane.last_seen)), y1: mid, y2: mid, class: 'tl-span' },
        svg('title', null, `${lane.org}: ${formatTime(lane.first_seen)} – ${formatTime(lane.last_seen)} UTC`)));
    const own = signals.filter((s) => s.org === lane.org)
      .sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity));
    for (const s of own) {
      const from = x(parseTime(s.first_seen));
      const to = x(parseTime(s.last_seen));
      // A signal of an instant is still a mark that can be seen and hovered.
      const width = Math.max(to - from, 7);
      const left = to - from >= 7 ? from : (from + to) / 2 - 3.5;
      group.append(svg('rect', {
        x: left, y: mid - 8, width, height: 16, rx: 3,
        class: `tl-signal sev-fill-${s.severity}`,
      }, svg('title', null, `${s.kind} (${s.severity}), ${s.count} events\n${formatTime(s.first_seen)} – ${formatTime(s.last_seen)} UTC`)));
    }
    root.append(group);
  });

  const legend = h('div', { class: 'legend', 'aria-hidden': 'true' },
    SEVERITIES.map((s) => h('span', null, h('i', { class: `swatch sev-fill-${s}` }), s)));
  return h('figure', { class: 'timeline-figure' }, root, legend);
}
