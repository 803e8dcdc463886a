// The admin API (docs/api.md) as the dashboard uses it: where its token
// comes from, and requests with the Bearer header whose errors read well.

const TOKEN_KEY = 'parley.adminToken';

export function keptToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return ''; // storage may be off
  }
}

export function keepToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage may be off */ }
}

// devToken asks a development-mode server for an admin token. It returns
// '' when the server has API keys (404), and throws when it cannot be asked.
export async function devToken() {
  let r;
  try {
    r = await fetch('/api/dev-admin-token', { cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the server cannot be reached (${e.message})`);
  }
  if (r.status === 404) return '';
  if (!r.ok) throw await errorOf(r);
  const body = await r.json().catch(() => ({}));
  if (typeof body.token !== 'string' || !body.token) {
    throw new ApiError(r.status, 'bad_response', 'the server answered without a token');
  }
  return body.token;
}

// ApiError is an error answer: HTTP status, the API's code and message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // readable: "forbidden: the token has no admin grant (403)".
  get readable() {
    const status = this.status ? ` (${this.status})` : '';
    return this.code && this.code !== this.message ? `${this.code}: ${this.message}${status}` : `${this.message}${status}`;
  }
}

async function errorOf(r) {
  const text = await r.text().catch(() => '');
  try {
    const e = JSON.parse(text).error;
    if (e && (e.code || e.message)) return new ApiError(r.status, String(e.code || ''), String(e.message || e.code));
  } catch { /* not JSON */ }
  return new ApiError(r.status, '', text.trim().slice(0, 200) || r.statusText || `HTTP ${r.status}`);
}

// api sends one request with the token and returns the JSON answer (null
// for 204). It throws an ApiError for an error answer or no answer.
export async function api(token, method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the server cannot be reached (${e.message})`);
  }
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  const text = await r.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(r.status, 'bad_response', 'the server answered with something other than JSON');
  }
}

// Paths of the API, with every name escaped.
const seg = encodeURIComponent;
export const paths = {
  rooms: () => '/api/rooms',
  room: (room) => `/api/rooms/${seg(room)}`,
  participant: (room, identity) => `/api/rooms/${seg(room)}/participants/${seg(identity)}`,
  mute: (room, identity, track) => `/api/rooms/${seg(room)}/participants/${seg(identity)}/tracks/${seg(track)}/mute`,
  events: (token) => `/api/events?access_token=${seg(token)}`,
};
