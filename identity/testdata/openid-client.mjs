// Signs a user in to a Gatehouse tenant as a Node.js web app does with the
// openid-client package, unmodified: discovery, the authorization code
// flow with PKCE (S256), state and nonce, the code exchange (which checks
// iss, aud, nonce and at_hash) and userinfo. The hosted sign-in's form is
// driven with plain HTTP requests, as a browser would send them.
//
// Usage: node openid-client.mjs '<json>', the JSON holding issuer,
// client_id, client_secret, redirect_uri, email and password. The folder
// of the npm packages is GATEHOUSE_NODE_MODULES. Prints what it got as
// JSON; on a failure, prints why to stderr and exits 1.
import dns from 'node:dns';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.GATEHOUSE_NODE_MODULES;
if (!modules) {
  throw new Error('GATEHOUSE_NODE_MODULES is not set');
}
const require = createRequire(path.join(modules, 'noop.js'));
const client = await import(pathToFileURL(require.resolve('openid-client')).href);

const args = JSON.parse(process.argv[2]);

// lookup resolves every *.localhost name to the loopback interface, as
// browsers do; Node asks the system's resolver, which knows none of them.
function lookup(hostname, options, callback) {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    if (options.all) {
      return callback(null, [{ address: '127.0.0.1', family: 4 }]);
    }
    return callback(null, '127.0.0.1', 4);
  }
  return dns.lookup(hostname, options, callback);
}

// localFetch is fetch for http://*.localhost URLs, over node:http with
// lookup above; the URL, and so the Host header, stay as they are. It
// follows no redirect: openid-client asks for none, and the sign-in below
// reads each one.
async function localFetch(input, init) {
  const req = new Request(input, { ...init, redirect: 'manual' });
  const url = new URL(req.url);
  if (url.protocol !== 'http:' || !(url.hostname === 'localhost' || url.hostname.endsWith('.localhost'))) {
    return fetch(input, init);
  }
  const body = req.body ? Buffer.from(await req.arrayBuffer()) : undefined;
  return new Promise((resolve, reject) => {
    const r = http.request(url, {
      method: req.method,
      headers: Object.fromEntries(req.headers),
      lookup,
      signal: req.signal,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const headers = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          headers.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
        }
        const empty = [204, 205, 304].includes(res.statusCode);
        resolve(new Response(empty ? null : Buffer.concat(chunks), {
          status: res.statusCode, statusText: res.statusMessage, headers,
        }));
      });
    });
    r.on('error', reject);
    r.end(body);
  });
}

// The browser's side of the sign-in: its cookies (host-only, one host),
// sent back with every request.
const cookies = new Map();

async function browse(url, init = {}) {
  const headers = new Headers(init.headers);
  if (cookies.size > 0) {
    headers.set('cookie', [...cookies].map(([k, v]) => `${k}=${v}`).join('; '));
  }
  const res = await localFetch(url, { ...init, headers });
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const value = pair.slice(i + 1).trim();
    const expired = attrs.some((a) => /^\s*max-age\s*=\s*(0|-\d+)\s*$/i.test(a));
    if (value === '' || expired) {
      cookies.delete(name);
    } else {
      cookies.set(name, value);
    }
  }
  return res;
}

// redirected returns where res sends the browser, failing unless it is a
// redirect with this status.
function redirected(res, status, what) {
  const to = res.headers.get('location');
  if (res.status !== status || !to) {
    throw new Error(`${what}: want a ${status} redirect, got ${res.status} to ${to}`);
  }
  return new URL(to, args.issuer);
}

// hidden returns the hidden fields of a page's form.
function hidden(page) {
  const fields = {};
  for (const m of page.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    fields[m[1]] = m[2].replaceAll('&#43;', '+').replaceAll('&#34;', '"').replaceAll('&amp;', '&');
  }
  return fields;
}

try {
  const config = await client.discovery(
    new URL(args.issuer),
    args.client_id,
    undefined,
    client.ClientSecretBasic(args.client_secret),
    { execute: [client.allowInsecureRequests], [client.customFetch]: localFetch },
  );

  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authURL = client.buildAuthorizationUrl(config, {
    redirect_uri: args.redirect_uri,
    scope: 'openid profile email',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  // The hosted sign-in, as a browser goes through it.
  const login = redirected(await browse(authURL), 302, 'authorize');
  if (login.pathname !== '/oauth/login') {
    throw new Error(`authorize sent the browser to ${login}, not the sign-in`);
  }
  const form = await browse(login);
  const page = await form.text();
  if (form.status !== 200) {
    throw new Error(`sign-in page: ${form.status} ${page}`);
  }
  const fields = hidden(page);
  if (!fields.id || !fields.csrf || cookies.get('__Host-gatehouse-flow') !== fields.csrf) {
    throw new Error(`the sign-in form's fields ${JSON.stringify(fields)} and cookies ${[...cookies.keys()]} do not match`);
  }
  const signedIn = await browse(new URL('/oauth/login', args.issuer), {
    method: 'POST',
    body: new URLSearchParams({
      id: fields.id, csrf: fields.csrf, step: 'password', email: args.email, password: args.password,
    }),
  });
  if (signedIn.status !== 303) {
    throw new Error(`sign-in: ${signedIn.status} ${await signedIn.text()}`);
  }
  const callback = redirected(signedIn, 303, 'sign-in');
  if (callback.pathname !== '/oauth/authorize/callback' || !cookies.has('__Host-gatehouse')) {
    throw new Error(`the sign-in sent the browser to ${callback} with cookies ${[...cookies.keys()]}`);
  }
  const back = redirected(await browse(callback), 302, 'callback');
  if (!back.href.startsWith(args.redirect_uri + '?')) {
    throw new Error(`the callback sent the browser to ${back}, not the app`);
  }

  // The app's side again: the code exchange, and userinfo.
  const tokens = await client.authorizationCodeGrant(config, back, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  console.log(JSON.stringify({
    issuer: config.serverMetadata().issuer,
    redirect_params: [...back.searchParams.keys()].sort(),
    token_type: tokens.token_type,
    access_token: typeof tokens.access_token === 'string' && tokens.access_token !== '',
    id_token: typeof tokens.id_token === 'string' && tokens.id_token !== '',
    sent_nonce: nonce,
    claims: { iss: claims.iss, sub: claims.sub, aud: [claims.aud].flat(), nonce: claims.nonce, email: claims.email },
    userinfo: { sub: info.sub, email: info.email },
  }));
} catch (err) {
  console.error(err); // with its cause
  process.exit(1);
}
