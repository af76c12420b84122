// Run by the Rust integration test `offline::jose_in_node_verifies_tokens_against_the_served_jwks`
// against a real gateway and server: MP_AUTH_JWKS_URL, MP_AUTH_ISSUER, MP_AUTH_AUDIENCE,
// MP_AUTH_TOKEN (a token from a login), MP_AUTH_USER_ID, MP_AUTH_SESSION_ID and
// MP_AUTH_BAD_TOKENS (a JSON object: case name -> token).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mpAuthVerifier } from './verify.mjs'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: this test is run by the mp-auth test suite`)
  return value
}

const verify = mpAuthVerifier({
  jwksUrl: env('MP_AUTH_JWKS_URL'),
  issuer: env('MP_AUTH_ISSUER'),
  audience: env('MP_AUTH_AUDIENCE')
})
const bad = JSON.parse(env('MP_AUTH_BAD_TOKENS'))

test('a token from a login verifies against the served JWKS', async () => {
  const claims = await verify(env('MP_AUTH_TOKEN'))
  assert.equal(claims.userId, env('MP_AUTH_USER_ID'))
  assert.equal(claims.sessionId, env('MP_AUTH_SESSION_ID'))
  assert.ok(claims.keyId, 'tokens carry a kid')
})

// What jose says about each refusal.
const expected = {
  tampered: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  alg_none: 'ERR_JOSE_ALG_NOT_ALLOWED',
  hs256_with_the_public_key: 'ERR_JOSE_ALG_NOT_ALLOWED',
  expired: 'ERR_JWT_EXPIRED',
  not_yet_valid: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
  wrong_typ: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
  wrong_audience: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
  wrong_issuer: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
  unknown_kid: 'ERR_JWKS_NO_MATCHING_KEY'
}

test('every case of refusal is passed in', () => {
  assert.deepEqual(Object.keys(bad).sort(), Object.keys(expected).sort())
})

for (const [name, code] of Object.entries(expected)) {
  test(`${name} is refused (${code})`, async () => {
    await assert.rejects(verify(bad[name]), (err) => {
      assert.equal(err.code, code, `${name}: ${err.code} ${err.message}`)
      return true
    })
  })
}
