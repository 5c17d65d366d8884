// Swagger UI, the README's fetch wrapper, the mailed pages and passkeys, in
// headless Chromium (Debian's package, driven by playwright-core), against a
// live latchkey.
//
//   node .ci/browser/swagger.mjs target/debug/latchkey
//
// Starts two latchkey servers on temporary data directories: one for Swagger
// UI (its Try-it-out buttons, its Authorize dialog, the refresh cookie), one
// with one-second access tokens for the README's fetch wrapper (which must
// refresh on `token_expired`, retry once, and log out). Screenshots go to
// .ci/browser/screenshots/ (git-ignored). Exits non-zero on the first check
// that fails, saying which.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.argv[2] ?? 'target/debug/latchkey';
const shots = join(here, 'screenshots');
mkdirSync(shots, { recursive: true });

const servers = [];
let failed = false;

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
}

/// `extra` is a list of arguments, or a function of the port giving them.
async function startLatchkey(extra = [], dir = mkdtempSync(join(tmpdir(), 'latchkey-browser-'))) {
  const port = await freePort();
  const args = typeof extra === 'function' ? extra(port) : extra;
  const child = spawn(binary, ['serve', '--data-dir', dir, '--port', String(port), ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  child.stderr.on('data', (chunk) => process.stderr.write(chunk));
  servers.push({ child, dir });
  const base = `http://127.0.0.1:${port}`;
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return base;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`latchkey did not start on ${base}`);
}

/// The operation block of `method` `path` in Swagger UI.
function operation(page, method, path) {
  return page.locator(`.opblock.opblock-${method}:has(.opblock-summary-path[data-path="${path}"])`);
}

/// Expands an operation, presses Try it out, fills the body, executes, and
/// returns the live response's status and body text.
async function tryItOut(page, method, path, body) {
  const block = operation(page, method, path);
  if (!(await block.locator('.try-out__btn').isVisible().catch(() => false))) {
    await block.locator('.opblock-summary').first().click();
  }
  const tryOut = block.locator('.try-out__btn');
  if ((await tryOut.textContent()).trim() === 'Try it out') await tryOut.click();
  if (body !== undefined) {
    await block.locator('textarea.body-param__text').fill(JSON.stringify(body));
  }
  // A previous answer's table would satisfy the wait: clear it first.
  const clear = block.locator('button.btn-clear');
  if (await clear.isVisible().catch(() => false)) await clear.click();
  await block.locator('button.execute').click();
  const status = block.locator('.live-responses-table .response .response-col_status');
  await status.first().waitFor({ timeout: 15000 });
  const code = Number((await status.first().textContent()).trim());
  const text = await block
    .locator('.live-responses-table .response .response-col_description pre')
    .first()
    .textContent()
    .catch(() => '');
  return { code, text };
}

async function swaggerUi(browser) {
  const base = await startLatchkey();
  const spec = await (await fetch(`${base}/openapi.json`)).json();
  const context = await browser.newContext();
  const page = await context.newPage();
  // Offline: nothing but latchkey itself may be fetched.
  const outside = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith('data:')) return route.continue();
    outside.push(url);
    return route.abort();
  });
  await page.goto(`${base}/docs`);
  await page.locator('.opblock').first().waitFor({ timeout: 15000 });
  await page.screenshot({ path: join(shots, 'docs.png'), fullPage: true });
  check(outside.length === 0, `/docs renders with no outside request (${outside.join(', ')})`);

  const expected = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const method of Object.keys(methods)) expected.push(`${method.toUpperCase()} ${path}`);
  }
  const listed = await page.$$eval('.opblock', (blocks) =>
    blocks.map(
      (block) =>
        `${block.querySelector('.opblock-summary-method').textContent.trim()} ${block
          .querySelector('.opblock-summary-path')
          .getAttribute('data-path')}`,
    ),
  );
  check(
    listed.length === expected.length && new Set(listed).size === listed.length,
    `every operation listed once (${listed.length} listed, ${expected.length} in the spec)`,
  );
  check(
    expected.every((op) => listed.includes(op)),
    `the listed operations are the spec's (missing: ${expected.filter((op) => !listed.includes(op)).join(', ')})`,
  );
  const tags = await page.$$eval('.opblock-tag', (headers) =>
    headers.map((header) => header.getAttribute('data-tag')),
  );
  const specTags = spec.tags.map((tag) => tag.name);
  check(JSON.stringify(tags) === JSON.stringify(specTags), `tags in order: ${tags.join(', ')}`);

  const account = { username: 'swagger', email: 'swagger@example.com', password: 'correct horse battery staple' };
  const registered = await tryItOut(page, 'post', '/api/auth/register', account);
  check(registered.code === 201, `register through Try it out answers 201 (got ${registered.code})`);
  const login = await tryItOut(page, 'post', '/api/auth/login', {
    email: account.email,
    password: account.password,
  });
  check(login.code === 200, `log in through Try it out answers 200 (got ${login.code})`);
  const accessToken = JSON.parse(login.text).accessToken;
  check(typeof accessToken === 'string' && accessToken.length > 20, 'the login answer holds an access token');
  await page.screenshot({ path: join(shots, 'login.png'), fullPage: true });

  const cookies = await context.cookies();
  const refresh = cookies.find((cookie) => cookie.name === 'refresh_token');
  check(refresh !== undefined && refresh.httpOnly, 'the refresh cookie is set, HttpOnly');
  const visible = await page.evaluate(() => document.cookie);
  check(!visible.includes('refresh_token'), 'document.cookie cannot read the refresh cookie');

  await page.locator('.scheme-container button.authorize').click();
  const bearer = page.locator('.modal-ux form').filter({ hasText: 'BearerAuth (http, Bearer)' });
  await bearer.locator('input').first().fill(accessToken);
  await bearer.locator('button.authorize').click();
  await page.locator('.modal-ux button.btn-done').first().click();
  const me = await tryItOut(page, 'get', '/api/profile/me');
  check(me.code === 200, `after Authorize, "Who am I" answers 200 (got ${me.code})`);
  check(me.text.includes(account.email), '"Who am I" names the user');

  const refreshed = await tryItOut(page, 'post', '/api/auth/refresh');
  check(refreshed.code === 200, `refresh through Try it out, with the cookie and the CSRF check, answers 200 (got ${refreshed.code})`);
  const logout = await tryItOut(page, 'post', '/api/auth/logout');
  check(logout.code === 200, `log out through Try it out answers 200 (got ${logout.code})`);
  const gone = (await context.cookies()).find((cookie) => cookie.name === 'refresh_token');
  check(gone === undefined, 'logging out clears the refresh cookie');
  const again = await tryItOut(page, 'post', '/api/auth/refresh');
  check(again.code === 401, `a refresh after logging out answers 401 (got ${again.code})`);
  await page.screenshot({ path: join(shots, 'logged-out.png'), fullPage: true });
  await context.close();
}

/// The README's fetch wrapper: the first ```js block after the
/// `<!-- fetch-wrapper -->` marker.
function readmeWrapper() {
  const readme = readFileSync(join(here, '..', '..', 'README.md'), 'utf8');
  const after = readme.split('<!-- fetch-wrapper -->')[1];
  if (after === undefined) throw new Error('README.md has no <!-- fetch-wrapper --> marker');
  const block = after.match(/```js\n([\s\S]*?)```/);
  if (block === null) throw new Error('no ```js block after the fetch-wrapper marker');
  return block[1];
}

async function fetchWrapper(browser) {
  // One-second access tokens: the wrapper meets `token_expired` at once.
  const base = await startLatchkey(['--access-ttl', '1s']);
  const account = { username: 'wrapped', email: 'wrapped@example.com', password: 'correct horse battery staple' };
  const made = await fetch(`${base}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(account),
  });
  check(made.status === 201, 'an account for the fetch wrapper');
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/healthz`);
  await page.addScriptTag({ content: `${readmeWrapper()}\nwindow.latchkey = { login, api, logout };` });
  const outcome = await page.evaluate(async ({ email, password }) => {
    const seen = [];
    const original = window.fetch;
    window.fetch = (url, options) => {
      seen.push(String(url).replace(location.origin, ''));
      return original(url, options);
    };
    await window.latchkey.login(email, password);
    const first = await window.latchkey.api('/api/profile/me');
    await new Promise((resolve) => setTimeout(resolve, 2500));
    seen.length = 0;
    const later = await window.latchkey.api('/api/profile/me');
    const afterExpiry = [...seen];
    await window.latchkey.logout();
    seen.length = 0;
    const afterLogout = await window.latchkey.api('/api/profile/me');
    return {
      first: first.status,
      later: later.status,
      afterExpiry,
      afterLogout: afterLogout.status,
      afterLogoutCalls: [...seen],
      cookie: document.cookie,
    };
  }, account);
  check(outcome.first === 200, `the wrapper's first call answers 200 (got ${outcome.first})`);
  check(
    outcome.later === 200 &&
      JSON.stringify(outcome.afterExpiry) ===
        JSON.stringify(['/api/profile/me', '/api/auth/refresh', '/api/profile/me']),
    `an expired access token is refreshed and the call retried once (${outcome.later}: ${outcome.afterExpiry.join(' → ')})`,
  );
  check(outcome.afterLogout === 401, `after logout the wrapper's calls answer 401 (got ${outcome.afterLogout})`);
  check(!outcome.cookie.includes('refresh_token'), 'the page never sees the refresh token');
  await context.close();
}

/// The token of the newest mail in the file outbox whose subject is
/// `subject`, waiting for it to be written.
async function mailedToken(dir, subject, seen) {
  const folder = join(dir, 'outbox-files');
  for (let attempt = 0; attempt < 100; attempt++) {
    let names = [];
    try {
      names = readdirSync(folder).filter((name) => name.endsWith('.eml') && !seen.has(name));
    } catch {
      // not written yet
    }
    for (const name of names) {
      const text = readFileSync(join(folder, name), 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '=');
      if (text.includes(`Subject: ${subject}`)) {
        seen.add(name);
        return text.match(/token=([A-Za-z0-9_-]+)/)[1];
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no mail "${subject}" in ${folder}`);
}

/// The pages mailed links open: they must work in a real browser, under
/// their Content-Security-Policy (a wrong script hash would leave them dead).
async function mailedPages(browser) {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-browser-'));
  const base = await startLatchkey([], dir);
  const seen = new Set();
  const account = { username: 'mailed', email: 'mailed@example.com', password: 'correct horse battery staple' };
  const made = await fetch(`${base}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(account),
  });
  check(made.status === 201, 'an account for the mailed pages');
  const context = await browser.newContext();
  const page = await context.newPage();
  const blocked = [];
  page.on('console', (message) => {
    if (message.type() === 'error') blocked.push(message.text());
  });

  const verify = await mailedToken(dir, 'Verify your email address', seen);
  await page.goto(`${base}/account/verify-email?token=${verify}`);
  await page.locator('button[type=submit]').click();
  await page.locator('#status').filter({ hasText: 'verified' }).waitFor({ timeout: 10000 });
  check(blocked.length === 0, `the verification page runs under its CSP (${blocked.join('; ')})`);
  await page.screenshot({ path: join(shots, 'verified.png'), fullPage: true });

  await fetch(`${base}/api/auth/password-reset`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: account.email }),
  });
  const reset = await mailedToken(dir, 'Reset your password', seen);
  await page.goto(`${base}/account/reset-password?token=${reset}`);
  await page.locator('[name=password]').fill('a brand new passphrase');
  await page.locator('[name=again]').fill('a different one');
  await page.locator('button[type=submit]').click();
  await page.locator('#status').filter({ hasText: 'differ' }).waitFor({ timeout: 10000 });
  await page.locator('[name=again]').fill('a brand new passphrase');
  await page.locator('button[type=submit]').click();
  await page.locator('#status').filter({ hasText: 'Log in with it' }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: join(shots, 'reset.png'), fullPage: true });
  const login = await fetch(`${base}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: account.email, password: 'a brand new passphrase' }),
  });
  check(login.status === 200, `the reset page set the new password (login ${login.status})`);
  await page.goto(`${base}/account/reset-password?token=${reset}`);
  await page.locator('[name=password]').fill('yet another passphrase');
  await page.locator('[name=again]').fill('yet another passphrase');
  await page.locator('button[type=submit]').click();
  const used = await page
    .locator('#status')
    .filter({ hasText: 'Invalid or used' })
    .waitFor({ timeout: 10000 })
    .then(() => true, () => false);
  check(used, 'a used reset link says so on the page');
  await context.close();
}

/// The page the passkey check runs in: served by this test on latchkey's
/// own origin (a route the browser context fulfils), calling latchkey's
/// API and navigator.credentials as an app's page would.
const PASSKEY_PAGE = `<!doctype html>
<meta charset="utf-8"><title>passkeys</title><p id="status">ready</p>
<script>
async function ceremony(start, startBody, token, run, finishPath) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = 'Bearer ' + token;
  const started = await fetch(start, { method: 'POST', headers, body: JSON.stringify(startBody) });
  if (started.status !== 200) return { step: 'start', status: started.status, body: await started.json() };
  const options = await started.json();
  const credential = await run(options.publicKey);
  const finished = await fetch(finishPath, {
    method: 'POST',
    headers,
    body: JSON.stringify({ challengeId: options.challengeId, credential: credential.toJSON() }),
  });
  return { step: 'finish', status: finished.status, body: await finished.json() };
}
window.registerPasskey = (token, name) =>
  ceremony('/api/auth/passkeys/register/start', { name }, token,
    (publicKey) => navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey) }),
    '/api/auth/passkeys/register/finish');
window.signIn = (email) =>
  ceremony('/api/auth/passkeys/login/start', email ? { email } : {}, null,
    (publicKey) => navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey) }),
    '/api/auth/passkeys/login/finish');
</script>`;

/// Registers a passkey in Chromium's virtual authenticator (the DevTools
/// protocol's WebAuthn domain) and signs in with it, with and without an
/// email, on a latchkey whose public URL is http://localhost:PORT.
async function passkeys(browser) {
  const base = await startLatchkey((port) => ['--public-url', `http://localhost:${port}`]);
  const site = base.replace('127.0.0.1', 'localhost');
  const account = { username: 'keyholder', email: 'keyholder@example.com', password: 'correct horse battery staple' };
  const made = await fetch(`${base}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(account),
  });
  check(made.status === 201, 'an account for the passkey');
  const login = await fetch(`${base}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: account.email, password: account.password }),
  });
  const { accessToken } = await login.json();
  check(typeof accessToken === 'string', 'a password login for the registration');

  const context = await browser.newContext();
  await context.route(`${site}/passkey-test`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: PASSKEY_PAGE }),
  );
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  await page.goto(`${site}/passkey-test`);

  const registered = await page.evaluate(([token]) => window.registerPasskey(token, 'Chromium'), [accessToken]);
  check(
    registered.status === 201 && registered.body.name === 'Chromium',
    `the page registers a passkey (${registered.status} ${registered.body.code ?? registered.body.message ?? ''})`,
  );
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  check(
    credentials.length === 1 && credentials[0].isResidentCredential,
    'the authenticator holds one discoverable credential',
  );

  const claims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  const usernameless = await page.evaluate(() => window.signIn(null));
  check(
    usernameless.status === 200 && typeof usernameless.body.accessToken === 'string',
    `the page signs in with the passkey and no email (${usernameless.status} ${usernameless.body.code ?? ''})`,
  );
  const amr = claims(usernameless.body.accessToken).amr;
  check(JSON.stringify(amr) === '["hwk","mfa"]', `its access token says amr ${JSON.stringify(amr)}`);
  const withEmail = await page.evaluate(([email]) => window.signIn(email), [account.email]);
  check(withEmail.status === 200, `the page signs in with the passkey and the email (${withEmail.status})`);
  const after = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  check(after.credentials[0].signCount >= 2, `the authenticator counted the sign-ins (${after.credentials[0].signCount})`);
  await page.locator('#status').evaluate((node) => { node.textContent = 'registered and signed in twice'; });
  await page.screenshot({ path: join(shots, 'passkeys.png'), fullPage: true });
  await context.close();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // CI runs as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox'],
});
try {
  await swaggerUi(browser);
  await fetchWrapper(browser);
  await mailedPages(browser);
  await passkeys(browser);
} catch (err) {
  failed = true;
  console.error(err.message ?? err);
} finally {
  await browser.close();
  for (const { child, dir } of servers) {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}
process.exit(failed ? 1 : 0);
