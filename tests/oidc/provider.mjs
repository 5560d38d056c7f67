// A real OpenID Provider (npm's oidc-provider) for the sign-in tests.
//
// Usage: node provider.mjs ACCOUNTS.json [CERT.pem KEY.pem]
// Listens on 127.0.0.1 on an ephemeral port, then prints one line
// `listening http://127.0.0.1:PORT` on stdout (the harness's readiness signal). With a
// certificate and key it serves HTTPS instead, as `https://localhost:PORT` (the name the
// test certificate is for).
// Clients: `tunnel` (the product's public native client: PKCE, loopback redirects,
// code and device flows) and `other` (a second client, for tokens of the wrong audience).
// ACCOUNTS.json: { "alice": { "email": ..., "email_verified": true, "groups": [...],
//                  "id_token_ttl": 3600 }, ... }; the login page takes the account id
// as login name (the provider's development login pages accept any password).
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const accounts = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function client(id) {
  return {
    client_id: id,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  };
}

const [certFile, keyFile] = process.argv.slice(3);
const server = certFile
  ? https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) })
  : http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = certFile ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [client('tunnel'), client('other')],
    clientBasedCORS: () => false,
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'groups'],
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
    },
    pkce: { required: () => true },
    ttl: {
      IdToken: (ctx, token) => accounts[token.available?.sub]?.id_token_ttl ?? 3600,
    },
    async findAccount(ctx, sub) {
      const account = accounts[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified,
            groups: account.groups,
          };
        },
      };
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});
