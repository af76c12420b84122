// Verifying mp-auth access tokens in a Node service with `jose`: the keys come
// from the JWKS the mp-auth gateway serves (fetched once, cached, refetched
// when a token names a new `kid`), the algorithms are pinned, and `typ`,
// `iss`, `aud` and the times are checked. Offline verification cannot see a
// logout before the token's `exp` (at most 2 h); call mp-auth's
// `Auth.VerifyToken` where that matters.

import { createRemoteJWKSet, jwtVerify } from 'jose'

// A verifier for tokens of `issuer` for `audience` (mp-auth's token.issuer and
// token.audience), with the keys at `jwksUrl`
// (e.g. https://auth.example.com/.well-known/jwks.json).
export function mpAuthVerifier({ jwksUrl, issuer, audience }) {
  const keys = createRemoteJWKSet(new URL(jwksUrl))
  return async function verifyAccessToken(token) {
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      algorithms: ['ES256', 'EdDSA'],
      issuer,
      audience,
      typ: 'at+jwt',
      clockTolerance: 30,
      requiredClaims: ['sub', 'exp', 'iat']
    })
    return {
      userId: payload.sub,
      appId: payload.client_id,
      sessionId: payload.sid,
      expiresAt: payload.exp,
      keyId: protectedHeader.kid
    }
  }
}
