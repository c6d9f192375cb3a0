// A real OpenID Connect provider for Arkivflöde's tests: `oidc-provider` from the npm registry
// (pinned in package-lock.json, installed by `make install`), on loopback.
//
//   node tests/oidc/provider.mjs PORT [--audience arkivflode] [--private-jwks FILE]
//
// It prints "ready <issuer>" on standard output once it listens. What it knows:
//
// * people (password "test" for all) in groups, as a municipality's directory would have them:
//   two archivists, a researcher, a system owner of Lex and an IT operator;
// * the public client "arkivflode" (the archive's pages with authorization code + PKCE, and the
//   CLI with the device authorization grant);
// * the confidential client "airflow" (secret "airflow-secret"): Airflow's own UI signing in with the
//   FAB auth manager (authorization code + PKCE, redirect /auth/oauth-authorized/oidc on any loopback
//   port); its access tokens are for the userinfo endpoint, which gives the name and groups;
// * one confidential client per business system for the client-credentials grant
//   ("lex-system", "viva-system": secret "<id>-secret").
//
// Access tokens are JWTs for the resource "api://arkivflode" (audience "arkivflode", the archive's client ID), signed RS256 (ES256 for
// viva-system, so that both algorithms are exercised) and carry the person's groups and name.
// Asking for another resource gives a token with that audience (a wrong-audience token).
// --private-jwks writes the signing keys to FILE (mode 0600): the tests forge tokens with them
// that are correctly signed but wrong in one claim (expired, wrong issuer, not yet valid).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parse as parseQuery } from 'node:querystring';

import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const port = Number(args[0]);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const audience = option('--audience', 'arkivflode');
const issuer = `http://127.0.0.1:${port}`;

export const PEOPLE = {
  anna: { name: 'Anna Arkivarie', groups: ['arkiv-arkivarier'] },
  bertil: { name: 'Bertil Bevarare', groups: ['arkiv-arkivarier', 'arkiv-forskare'] },
  rut: { name: 'Rut Forskare', groups: ['arkiv-forskare'] },
  sara: { name: 'Sara Systemägare', groups: ['lex-systemagare'] },
  ivar: { name: 'Ivar IT-drift', groups: ['it-drift'] },
};
const PASSWORD = 'test';

function jwk(kind, kid) {
  const { privateKey } = kind === 'RSA'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: kind === 'RSA' ? 'RS256' : 'ES256' };
}
const keys = [jwk('RSA', `rsa-${randomBytes(4).toString('hex')}`), jwk('EC', `ec-${randomBytes(4).toString('hex')}`)];
const keyFile = option('--private-jwks');
if (keyFile) writeFileSync(keyFile, JSON.stringify({ keys }), { mode: 0o600 });

const systemClient = (system) => ({
  client_id: `${system}-system`,
  client_secret: `${system}-system-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

const configuration = {
  clients: [
    {
      client_id: 'arkivflode',
      application_type: 'native', // loopback redirect URIs match on any port (RFC 8252, section 7.3)
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/archive'],
    },
    {
      client_id: 'airflow',
      client_secret: 'airflow-secret',
      application_type: 'native', // the API server's loopback port differs per test run
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/auth/oauth-authorized/oidc'],
    },
    systemClient('lex'),
    systemClient('viva'),
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups', 'offline_access', 'archive'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  async findAccount(_ctx, id) {
    const person = PEOPLE[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: person.name, preferred_username: id, groups: person.groups };
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    const person = token.accountId && PEOPLE[token.accountId];
    return person ? { name: person.name, preferred_username: token.accountId, groups: person.groups } : undefined;
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys },
  clientBasedCORS: (_ctx, origin) => /^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/.test(origin),
  ttl: { AccessToken: 600, ClientCredentials: 600, DeviceCode: 600, Grant: 3600, Interaction: 600, Session: 3600 },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, client, oneOf) => oneOf
        || (client.clientId === 'airflow' ? undefined : `api://${audience}`),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource, client) => ({
        scope: 'archive',
        audience: resource === `api://${audience}` ? audience : resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: client.clientId === 'viva-system' ? 'ES256' : 'RS256' } },
      }),
    },
  },
};

const provider = new Provider(issuer, configuration);

const page = (title, body) => `<!doctype html><html lang="sv"><head><meta charset="utf-8"><title>${title}</title>`
  + `</head><body><h1>${title}</h1>${body}</body></html>`;
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; if (data.length > 10000) req.destroy(); });
    req.on('end', () => resolve(parseQuery(data)));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    if (action === 'login' && req.method === 'POST') {
      const form = await readBody(req);
      if (PEOPLE[form.login] && form.password === PASSWORD) {
        await provider.interactionFinished(req, res, { login: { accountId: form.login } },
          { mergeWithLastSubmission: false });
        return;
      }
    }
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(page('Logga in', `<p>${escape(params.client_id)} vill veta vem du är.</p>`
      + `<form method="post" action="/interaction/${escape(uid)}/login">`
      + '<label>Användarnamn <input name="login" id="login" autofocus></label> '
      + '<label>Lösenord <input name="password" id="password" type="password"></label> '
      + '<button type="submit" id="submit">Logga in</button></form>'));
    return;
  }
  // consent: the municipality's own applications are trusted, so it is granted without asking
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const handler = provider.callback();
const server = createServer(async (req, res) => {
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/.exec(req.url.split('?')[0]);
  if (!m) {
    handler(req, res);
    return;
  }
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (err) {
    res.statusCode = 400;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end(`interaction failed: ${err.name}`);
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
