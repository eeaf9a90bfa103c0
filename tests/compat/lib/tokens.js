'use strict';
// Hand-rolled HS256 JWTs (node:crypto), matching token_hmac_secret in gateway.toml.

const crypto = require('node:crypto');

const SECRET = 'compat-secret';

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** Signs `claims` with HS256; `alg: 'none'` produces an unsigned token. */
function signJwt(claims, { secret = SECRET, alg = 'HS256' } = {}) {
  const signingInput = `${b64url({ alg, typ: 'JWT' })}.${b64url(claims)}`;
  if (alg === 'none') return `${signingInput}.`;
  if (alg !== 'HS256') throw new Error(`unsupported alg ${alg}`);
  const signature = crypto.createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

/** Connection token: { sub, exp, iat, info?, channels? }. `ttl` may be negative for an expired token. */
function connectionToken(user, { ttl = 3600, info, channels, secret, alg } = {}) {
  const iat = now();
  const claims = { sub: user, exp: iat + ttl, iat };
  if (info !== undefined) claims.info = info;
  if (channels !== undefined) claims.channels = channels;
  return signJwt(claims, { secret, alg });
}

/** Subscription token: { sub, channel, exp }. */
function subscriptionToken(user, channel, { ttl = 3600, secret, alg } = {}) {
  const iat = now();
  return signJwt({ sub: user, channel, exp: iat + ttl, iat }, { secret, alg });
}

module.exports = { signJwt, connectionToken, subscriptionToken, SECRET };
