// Join tokens (docs/protocol.md, "Tokens"): the one in the page's link, or
// in development mode one from /api/dev-token, for an identity this tab
// keeps.

// A tab keeps the identity the server first gave it in a room, so that a
// reload is the same participant (presence and the chat outbox carry
// over); another tab has its own sessionStorage, hence its own identity.
const identityKey = (room) => `parley.identity.${room}`;

function keptIdentity(room, identity) {
  try {
    if (identity === undefined) return sessionStorage.getItem(identityKey(room)) || '';
    if (identity) sessionStorage.setItem(identityKey(room), identity);
    else sessionStorage.removeItem(identityKey(room));
  } catch { /* storage may be off */ }
  return identity || '';
}

// tokenIdentity reads the participant identity (sub) of a JWT, unchecked.
function tokenIdentity(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}

// getToken returns {token, identity}: the token given (from the link), or
// one from the development endpoint.
export async function getToken(room, name, given) {
  if (given) return { token: given, identity: tokenIdentity(given) };
  const q = new URLSearchParams({ room, name });
  const kept = keptIdentity(room);
  if (kept) q.set('identity', kept);
  let r;
  try {
    r = await fetch(`/api/dev-token?${q}`);
  } catch (e) {
    throw new Error(`The server cannot be reached: ${e.message}`);
  }
  if (r.status === 404) {
    throw new Error('This server needs a join token: open the link your application gave you (it has token=… in it).');
  }
  if (r.status === 400 && kept) {
    keptIdentity(room, ''); // refused: start afresh with a new identity
    return getToken(room, name, '');
  }
  if (!r.ok) throw new Error(`The server refused to give a token: ${(await r.text()).trim()}`);
  const body = await r.json();
  const identity = body.identity || tokenIdentity(body.token);
  keptIdentity(room, identity);
  return { token: body.token, identity };
}
