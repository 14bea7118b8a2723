// `npm test`: starts server.js on a free port with a fresh subject issuer key and checks
// that it answers an RFC 8693 exchange with a JWT that verifies against its /jwks, and
// refuses what fedbroker refuses: a replayed jti, another subject, a wrong token
// audience or issuer, no exp, another target.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT,
} from 'jose';

const ISS = 'https://iss0.loadgen.test';
const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port: p } = s.address(); s.close(() => resolve(p)); });
});
const { publicKey, privateKey } = await generateKeyPair('RS256');
const dir = mkdtempSync(join(tmpdir(), 'peer-test-'));
writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k0', alg: 'RS256', use: 'sig' }] }));

for (const alg of ['RS256', 'ES256', 'EdDSA']) {
  const child = spawn('node', ['server.js'], {
    env: {
      ...process.env, NODE_ENV: 'production', PORT: String(port), JWKS_PATH: join(dir, 'jwks.json'), SUBJECT_ISSUER: ISS, SUBJECT: 'sa0', ALG: alg,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i += 1) {
      try { if ((await fetch(`${base}/.well-known/openid-configuration`)).ok) break; } catch { /* not yet */ }
      assert.ok(i < 200, 'server.js did not start within 10 s');
      await new Promise((r) => { setTimeout(r, 50); });
    }
    let n = 0;
    const mint = ({ sub = 'sa0', aud = 'fedbroker', iss = ISS, exp = true, jti } = {}) => {
      n += 1;
      const t = new SignJWT({ sub, jti: jti ?? `${alg}-${n}` }).setProtectedHeader({ alg: 'RS256', kid: 'k0' })
        .setIssuer(iss).setAudience(aud).setIssuedAt();
      return (exp ? t.setExpirationTime('1h') : t).sign(privateKey);
    };
    const post = async (token, audience = 'sts.amazonaws.com') => {
      const r = await fetch(`${base}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange'
          + '&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt'
          + `&audience=${audience}&client_id=fedbroker-load&subject_token=${token}`,
      });
      return [r.status, await r.json()];
    };

    const token = await mint();
    const [status, body] = await post(token);
    assert.equal(status, 200, `exchange: HTTP ${status} ${body.error}: ${body.error_description}`);
    assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:jwt');
    assert.equal(body.token_type, 'N_A');
    assert.equal(body.expires_in, 900);
    assert.equal(decodeProtectedHeader(body.access_token).alg, alg);
    const { payload } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${base}/jwks`)), {
      issuer: base, audience: 'sts.amazonaws.com', algorithms: [alg],
    });
    assert.equal(payload.sub, 'sa0');
    assert.notEqual(decodeJwt(body.access_token).jti, undefined);

    const refused = async (what, t, audience) => {
      const [s, b] = await post(await t, audience);
      // Never print the body: a 200 answer holds a token.
      assert.equal(s, 400, `${what}: HTTP ${s}, not refused`);
      return b.error;
    };
    assert.equal(await refused('replay', token), 'invalid_request');
    assert.equal(await refused('other subject', mint({ sub: 'other' })), 'invalid_request');
    assert.equal(await refused('token aud', mint({ aud: 'x' })), 'invalid_request');
    assert.equal(await refused('issuer', mint({ iss: 'https://evil.test' })), 'invalid_request');
    assert.equal(await refused('no exp', mint({ exp: false })), 'invalid_request');
    assert.equal(await refused('target', mint(), 'other'), 'invalid_target');
    console.log(`ok: issued ${alg}`);
  } finally {
    child.kill();
    await new Promise((r) => { child.on('exit', r); });
  }
}
