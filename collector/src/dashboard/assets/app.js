// The dashboard's shell: login with an API token, navigation by role, and the router
// that renders one page at a time from the address fragment (#/signals?kind=…), so that
// every view can be bookmarked, shared between colleagues and reached with Back.

import * as api from './api.js';
import { h, mount, errorNotice, notice, pill } from './ui.js';
import * as campaigns from './campaigns.js';
import * as signals from './signals.js';
import * as agents from './agents.js';
import * as advisories from './advisories.js';
import * as audit from './audit.js';

/** The pages, in the order of the navigation, with the roles that may use each. */
const PAGES = [
  { id: 'campaigns', title: 'Campaigns', roles: ['admin', 'analyst'], module: campaigns },
  { id: 'signals', title: 'Signals', roles: ['admin', 'analyst', 'member'], module: signals },
  { id: 'agents', title: 'Agents', roles: ['admin', 'analyst'], module: agents },
  { id: 'advisories', title: 'Advisories', roles: ['admin', 'analyst', 'member'], module: advisories },
  { id: 'audit', title: 'Audit', roles: ['admin', 'auditor'], module: audit },
];

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const nav = document.getElementById('nav');
const session = document.getElementById('session');

let user = null;
let current = null; // the AbortController of the page on screen
let live = null; // the AbortController of the event stream
const listeners = new Set();

const allowed = () => PAGES.filter((page) => page.roles.includes(user.role));

function parseRoute() {
  const text = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = text.split('?');
  const [page = '', ...rest] = path.split('/').map(decodeURIComponent);
  return { page, rest, query: Object.fromEntries(new URLSearchParams(query)) };
}

function renderNav(active) {
  mount(nav, h('ul', null, allowed().map((page) => h('li', null,
    h('a', {
      href: `#/${page.id}`,
      id: `nav-${page.id}`,
      'aria-current': page.id === active ? 'page' : null,
    }, page.title)))));
}

function renderSession() {
  mount(session,
    h('span', { class: 'live', id: 'live', hidden: true, title: 'Live: campaigns refresh as they change' }, 'Live'),
    h('span', { class: 'who', id: 'who' },
      h('strong', null, user.name),
      pill(user.role, 'role'),
      user.org ? pill(user.org, 'org', 'Your organisation') : null),
    h('button', { type: 'button', class: 'button secondary small', id: 'logout', onclick: logout }, 'Log out'));
}

/** Renders the page the address names; `focus` moves the keyboard focus to its title. */
async function route(focus = false) {
  if (!user) return;
  if (current) current.abort();
  current = new AbortController();
  listeners.clear();
  const { page: id, rest, query } = parseRoute();
  const shown = location.hash;
  main.setAttribute('aria-busy', 'true');
  try {
    await show(id, rest, query, focus);
  } finally {
    // What the page on screen shows, once it is complete (tests wait for this).
    if (shown === location.hash) {
      main.dataset.route = shown;
      main.setAttribute('aria-busy', 'false');
    }
  }
}

async function show(id, rest, query, focus) {
  const page = PAGES.find((p) => p.id === id);
  if (!page) {
    const first = allowed()[0];
    if (first) location.replace(`#/${first.id}`);
    else mount(main, notice('error', 'Your role may use no page of the dashboard.'));
    return;
  }
  renderNav(page.id);
  document.title = `${page.title} · Vedetta`;
  if (!page.roles.includes(user.role)) {
    mount(main, h('h1', { tabindex: '-1', id: 'page-title' }, page.title),
      notice('error', `The ${user.role} role may not see this page.`));
    return;
  }
  const context = {
    main,
    user,
    rest,
    query,
    signal: current.signal,
    /** Calls `handler(name, data)` for live events while this page is on screen. */
    onLive: (handler) => listeners.add(handler),
  };
  mount(main, h('p', { class: 'loading', 'aria-live': 'polite' }, 'Loading…'));
  try {
    await page.module.render(context);
  } catch (error) {
    // Left for another page, or logged out (a token the collector no longer accepts).
    if (error.name === 'AbortError' || context.signal.aborted) return;
    mount(main, h('h1', { tabindex: '-1', id: 'page-title' }, page.title), errorNotice(error, 'Loading this page'));
  }
  if (focus && !current.signal.aborted) {
    const title = document.getElementById('page-title');
    if (title) title.focus({ preventScroll: true });
  }
}

function startLive() {
  if (!['admin', 'analyst'].includes(user.role)) return;
  live = new AbortController();
  api.follow('/stream', {
    signal: live.signal,
    onState: (up) => {
      const badge = document.getElementById('live');
      if (badge) badge.hidden = !up;
    },
    onEvent: (name, data) => listeners.forEach((listener) => listener(name, data)),
  });
}

function showLogin(message) {
  user = null;
  if (current) current.abort();
  if (live) live.abort();
  topbar.hidden = true;
  document.title = 'Log in · Vedetta';
  const tokenInput = h('input', {
    id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false', placeholder: 'vdt_…', 'aria-describedby': 'token-help',
  });
  const status = h('div', { id: 'login-status', 'aria-live': 'polite' },
    message ? notice('error', message) : null);
  const submit = h('button', { type: 'submit', class: 'button', id: 'login' }, 'Log in');
  const form = h('form', { class: 'login-card', id: 'login-form' },
    h('div', { class: 'login-brand' }, h('img', { src: 'favicon.svg', alt: '', width: 40, height: 40 }),
      h('div', null, h('h1', null, 'Vedetta'), h('p', { class: 'muted' }, 'Threat intelligence for the partnership'))),
    h('label', { for: 'token' }, 'API token'),
    tokenInput,
    h('p', { class: 'hint', id: 'token-help' },
      'Paste the token you were given (vedetta-collector user add). It is kept only in this browser tab and sent only to this collector.'),
    status,
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = tokenInput.value.trim();
    if (!value) return;
    submit.disabled = true;
    mount(status, h('p', { class: 'muted' }, 'Checking…'));
    api.setToken(value);
    try {
      await start();
    } catch (error) {
      api.clearToken();
      mount(status, errorNotice(error.status === 401 ? { message: 'This token is unknown or revoked.' } : error));
      submit.disabled = false;
      tokenInput.select();
    }
  });
  mount(main, h('div', { class: 'login-page' }, form));
  tokenInput.focus();
}

function logout() {
  api.clearToken();
  history.replaceState(null, '', location.pathname);
  showLogin();
}

/** Asks who the token belongs to, then shows the pages of that role. */
async function start() {
  user = await api.get('/whoami');
  topbar.hidden = false;
  renderSession();
  startLive();
  await route();
}

api.onUnauthorized((message) => {
  if (!user) return;
  api.clearToken();
  showLogin(`The collector no longer accepts this token: ${message}. Log in again.`);
});

window.addEventListener('hashchange', () => route(true));

if (api.token()) {
  start().catch((error) => {
    if (error.status === 401) return showLogin('Your session has ended. Log in again.');
    api.clearToken();
    showLogin(error.message);
  });
} else {
  showLogin();
}
