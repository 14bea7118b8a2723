// panva's oidc-provider with an RFC 8693 token-exchange grant: the peer that
// `fedbroker-load --peer oidc-provider` measures fedbroker against, with the same
// pre-minted subject tokens. It does what the broker does for one issuer and one rule:
// verify the subject token against the issuer's static key set (algorithm from the
// configuration, iss, aud, exp, nbf), refuse a reused jti (one-time, in memory), check
// the rule (subject and target audience), and answer a JWT signed with the provider's
// own key (provider-native: a JWT-format AccessToken for a ResourceServer, signed from
// the provider's keystore, not stored).
//
// Environment: PORT, JWKS_PATH (the subject issuer's public JWKS), SUBJECT_ISSUER,
// SUBJECT_ALG (default RS256), SUBJECT (the one rule's subject; unset: any subject),
// ALG (RS256, ES256 or EdDSA: the issued tokens' algorithm), TARGET (default sts.amazonaws.com).
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';
import { createLocalJWKSet, jwtVerify } from 'jose';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return v;
};

const PORT = Number(env('PORT'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const SUBJECT_ISSUER = env('SUBJECT_ISSUER');
const SUBJECT_ALG = env('SUBJECT_ALG', 'RS256');
const SUBJECT = process.env.SUBJECT;
const ALG = env('ALG', 'RS256');
const TARGET = env('TARGET', 'sts.amazonaws.com');
const SUBJECT_AUDIENCE = 'fedbroker';
const CLIENT_ID = 'fedbroker-load';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TYPES = new Set([
  JWT_TYPE,
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:ietf:params:oauth:token-type:access_token',
]);
const LIFETIME = 900;

const subjectKeys = createLocalJWKSet(JSON.parse(readFileSync(env('JWKS_PATH'), 'utf8')));

// The provider's signing key, generated at start like fedbroker's `keys generate`.
let signingJwk;
if (ALG === 'RS256') {
  signingJwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
} else if (ALG === 'ES256') {
  signingJwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
} else if (ALG === 'EdDSA') {
  signingJwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
} else {
  console.error(`ALG ${ALG}: only RS256, ES256 and EdDSA`);
  process.exit(2);
}
signingJwk = { ...signingJwk, alg: ALG, use: 'sig', kid: 'peer-1' };

// One-time use of the subject token's jti until it expires: the same replay check as
// fedbroker's memory store. Expired entries are swept every 10 s.
const seen = new Map();
setInterval(() => {
  const now = Date.now() / 1000;
  for (const [jti, exp] of seen) {
    if (exp < now) seen.delete(jti);
  }
}, 10_000).unref();

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    token_endpoint_auth_method: 'none',
    grant_types: [GRANT],
    response_types: [],
    redirect_uris: [],
  }],
  jwks: { keys: [signingJwk] },
  enabledJWA: { idTokenSigningAlgValues: [ALG] },
  clientDefaults: { id_token_signed_response_alg: ALG },
  features: { devInteractions: { enabled: false } },
  ttl: { AccessToken: LIFETIME },
});

const resourceServer = new provider.ResourceServer(TARGET, {
  audience: TARGET,
  scope: '',
  accessTokenTTL: LIFETIME,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: ALG } },
});

async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  if (!SUBJECT_TYPES.has(params.subject_token_type)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  if (params.audience !== TARGET) {
    throw new errors.InvalidTarget('no rule grants this target');
  }
  let payload;
  try {
    ({ payload } = await jwtVerify(params.subject_token, subjectKeys, {
      algorithms: [SUBJECT_ALG],
      issuer: SUBJECT_ISSUER,
      audience: SUBJECT_AUDIENCE,
      requiredClaims: ['exp'],
    }));
  } catch {
    throw new errors.InvalidRequest('invalid subject_token');
  }
  // After the signature and claims, as in fedbroker.
  if (typeof payload.jti !== 'string' || seen.has(payload.jti)) {
    throw new errors.InvalidRequest('invalid subject_token');
  }
  seen.set(payload.jti, payload.exp);
  if (SUBJECT !== undefined && payload.sub !== SUBJECT) {
    throw new errors.InvalidRequest('denied by policy');
  }
  const token = new provider.AccessToken({
    accountId: payload.sub,
    client,
    gty: 'token_exchange',
    resourceServer,
  });
  ctx.body = {
    access_token: await token.save(),
    issued_token_type: JWT_TYPE,
    token_type: 'N_A',
    expires_in: token.expiration,
  };
}

provider.registerGrantType(GRANT, tokenExchange, [
  'subject_token', 'subject_token_type', 'audience', 'resource',
  'requested_token_type', 'actor_token', 'actor_token_type', 'scope',
]);

provider.listen(PORT, '127.0.0.1');
console.error(`oidc-provider ${ISSUER} ready (issued ${ALG}, subject ${SUBJECT_ALG} from ${SUBJECT_ISSUER})`);
