// End-to-end test of the sample's login page: the page's own JS (app.js,
// pages/login/login.js, utils/auth.js, config.js) runs in a node:vm context
// with a `wx` shim whose wx.login mints codes at the WeChat simulator and
// whose wx.request talks HTTP to a running mp-auth gateway. Covered: the
// silent login on launch (and PHONE_REQUIRED showing the phone button), the
// phone-button flows and their errors, both tokens stored, a 401 from the API
// refreshed once and retried, a session that ended, and logout.
//
//   MP_AUTH_GATEWAY_URL=http://127.0.0.1:8080 MP_AUTH_SIM_URL=http://127.0.0.1:9400 \
//   MP_AUTH_APP_ID=wx_demo_app node --test examples/miniprogram/test/
//
// The tests inject faults into the simulator (and clear them all afterwards):
// point them at a simulator no one else is using at the same time.

'use strict'

const { describe, it, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { loadMiniProgram, requireEnv, simClient, jwtPayload, closedPort, startApi } = require('./harness')
const { createWx } = require('./wx-shim')

const ROUTE = 'pages/login/login'
const TOKEN_KEY = 'mp_auth_token'
const SLOW = { timeout: 60000 }

let env = null
let envError = null
try {
  env = requireEnv()
} catch (err) {
  envError = err
}

if (envError) {
  // One clear failure instead of a dozen cancelled tests.
  it('needs a running gateway and simulator (MP_AUTH_GATEWAY_URL, MP_AUTH_SIM_URL, MP_AUTH_APP_ID)', () => {
    throw envError
  })
} else {
  describe('the login page, against a running gateway and WeChat simulator', suite)
}

function suite() {
  const sim = simClient(env.simUrl, env.appId)

  afterEach(async () => {
    await sim.clearFaults()
  })

  let counter = 0
  function newUser() {
    counter += 1
    return `mp-page-${process.pid}-${Date.now().toString(36)}-${counter}`
  }

  // Launches the mini program for a simulated user (a fresh one by default).
  // `open: false` leaves the page mounted but not loaded. For a new user the
  // launch's silent login answers PHONE_REQUIRED and the page shows the phone
  // button with a fresh code: that silent attempt (its wx.login, request and
  // events) is moved to `launch`, so the log starts where the button appears.
  async function start({ gatewayUrl = env.gatewayUrl, user = newUser(), open = true, apiUrl, storage } = {}) {
    const shim = createWx({ simUrl: env.simUrl, appId: env.appId, user })
    if (storage) shim.wx.setStorageSync(TOKEN_KEY, storage)
    const config = { gatewayBaseUrl: gatewayUrl }
    if (apiUrl) config.apiBaseUrl = apiUrl
    const mp = loadMiniProgram(shim.wx, { config })
    mp.launch()
    const page = open ? await mp.open(ROUTE) : mp.mount(ROUTE)
    await shim.idle()
    const launch = { logins: [], requests: [] }
    const first = shim.log.requests[0]
    if (open && page.data.needPhone && first && first.response && first.response.data.reason === 'PHONE_REQUIRED') {
      launch.logins.push(shim.log.logins.shift())
      launch.requests.push(shim.log.requests.shift())
      const events = shim.log.events
      const answered = events.findIndex((e) => e.type === 'response')
      events.splice(0, answered + 1)
    }
    // Taps the phone button with this event detail; resolves when all settled.
    async function tap(detail) {
      shim.mark('tap')
      await page.onGetPhoneNumber({ type: 'getphonenumber', detail, target: {}, currentTarget: {} })
      await shim.idle()
    }
    return { user, shim, mp, page, tap, launch }
  }

  // What the phone button gives after the user allows it.
  async function allowed(user, { legacy = false } = {}) {
    const pressed = await sim.phone(user)
    const detail = { errMsg: 'getPhoneNumber:ok', encryptedData: pressed.encryptedData, iv: pressed.iv }
    if (!legacy) detail.code = pressed.code // old clients return no code
    return detail
  }

  function eventsSinceLastTap(shim) {
    const events = shim.log.events
    const tap = events.findLastIndex((e) => e.type === 'mark' && e.name === 'tap')
    return events.slice(tap + 1)
  }

  // The single-use-code rules: after the tap, exactly one request, no wx.login
  // before its outcome, and a fresh wx.login after it.
  function assertOneRequestThenFreshCode(shim) {
    const after = eventsSinceLastTap(shim)
    const types = after.map((e) => e.type)
    assert.equal(types.filter((t) => t === 'request').length, 1, `one request per tap: ${types}`)
    const outcome = types.findIndex((t) => t === 'response' || t === 'requestFail')
    const firstLogin = types.indexOf('login')
    assert.ok(outcome >= 0, 'the request finished')
    assert.ok(firstLogin > outcome, `wx.login only after the outcome, never in the callback: ${types}`)
    const codes = shim.log.logins.map((l) => l.code)
    assert.equal(new Set(codes).size, codes.length, 'every wx.login gave a new code')
  }

  function lastModal(shim) {
    const modal = shim.log.modals[shim.log.modals.length - 1]
    assert.ok(modal, 'a modal was shown')
    return modal
  }

  it('logs in with the new phone code flow and stores a token whose sub is the user id', SLOW, async () => {
    const { user, shim, mp, page, tap } = await start()
    assert.equal(shim.log.logins.length, 1, 'wx.login ran when the page loaded')
    assert.equal(page.data.codeReady, true)
    const loadCode = shim.log.logins[0].code
    const detail = await allowed(user)

    await tap(detail)

    assert.equal(shim.log.requests.length, 1)
    const req = shim.log.requests[0]
    assert.equal(req.url, `${env.gatewayUrl}/auth/mp_login`)
    assert.equal(req.method, 'POST')
    assert.deepEqual(req.body, { code: loadCode, appId: env.appId, phoneCode: detail.code })
    assert.equal(req.response.statusCode, 200, JSON.stringify(req.response.data))
    const body = req.response.data
    assert.equal(body.token_type, 'bearer')
    assert.equal(body.openid, shim.log.logins[0].openid)

    const stored = shim.wx.getStorageSync(TOKEN_KEY)
    assert.equal(stored.access_token, body.access_token)
    assert.equal(stored.user_id, body.user_id)
    assert.equal(stored.openid, body.openid)
    const expected = Date.now() + body.expires_in * 1000
    assert.ok(Math.abs(stored.expires_at - expected) < 10000, 'expires_at = now + expires_in')

    const claims = jwtPayload(stored.access_token)
    assert.equal(typeof body.user_id, 'string')
    assert.equal(claims.sub, body.user_id)

    assert.equal(page.data.user.user_id, body.user_id)
    assert.equal(page.data.busy, false)
    assert.equal(page.data.notice.kind, 'success')
    assert.equal(mp.app.globalData.auth.user_id, body.user_id)
    assert.deepEqual(shim.log.toasts.map((t) => t.title), ['登录成功'])
    assert.equal(shim.loadingVisible, false)
    assertOneRequestThenFreshCode(shim)
  })

  it('falls back to the legacy encryptedData and iv when the phone button returns no code', SLOW, async () => {
    const { user, shim, page, tap } = await start()
    const detail = await allowed(user, { legacy: true })

    await tap(detail)

    const req = shim.log.requests[0]
    assert.deepEqual(req.body, {
      code: shim.log.logins[0].code,
      appId: env.appId,
      encryptedData: detail.encryptedData,
      iv: detail.iv
    })
    assert.equal(req.response.statusCode, 200, JSON.stringify(req.response.data))
    assert.equal(shim.wx.getStorageSync(TOKEN_KEY).user_id, req.response.data.user_id)
    assert.equal(page.data.user.user_id, req.response.data.user_id)
    assertOneRequestThenFreshCode(shim)
  })

  for (const errMsg of ['getPhoneNumber:fail user deny', 'getPhoneNumber:fail:user deny']) {
    it(`sends nothing and explains when the user denies ("${errMsg}")`, SLOW, async () => {
      const { shim, page, tap } = await start()

      await tap({ errMsg })

      assert.equal(shim.log.requests.length, 0)
      assert.equal(shim.wx.getStorageSync(TOKEN_KEY), '')
      assert.equal(shim.log.toasts.length, 1)
      assert.match(shim.log.toasts[0].title, /取消授权/)
      assert.equal(page.data.notice.kind, 'warn')
      assert.match(page.data.notice.en, /declined/)
      assert.equal(shim.log.logins.length, 1, 'the load-time code is kept for the next tap')
    })
  }

  it('sends nothing and explains when the mini program has no permission', SLOW, async () => {
    const { shim, page, tap } = await start()

    await tap({ errMsg: 'getPhoneNumber:fail no permission' })

    assert.equal(shim.log.requests.length, 0)
    assert.match(lastModal(shim).content, /未认证/)
    assert.match(page.data.notice.en, /not verified/)
  })

  it('sends nothing and explains when privacy is not authorized or the quota is used up', SLOW, async () => {
    const { shim, page, tap } = await start()

    await tap({ errMsg: 'getPhoneNumber:fail privacy permission is not authorized', errno: 104 })
    assert.match(lastModal(shim).content, /隐私/)
    assert.match(page.data.notice.en, /privacy/)

    await tap({ errMsg: 'getPhoneNumber:fail quota exhausted', errno: 1400001 })
    assert.match(lastModal(shim).content, /次数已用完/)
    assert.match(page.data.notice.en, /quota/)

    assert.equal(shim.log.requests.length, 0)
  })

  it('shows the blocked-user message when WeChat blocks the login (40226 -> 403 USER_BLOCKED)', SLOW, async () => {
    const { user, shim, page, tap } = await start()
    await sim.fault({ endpoint: 'jscode2session', count: 10, errcode: 40226 })

    await tap(await allowed(user))

    const res = shim.log.requests[0].response
    assert.equal(res.statusCode, 403)
    assert.equal(res.data.reason, 'USER_BLOCKED')
    assert.match(lastModal(shim).content, /安全风险/)
    assert.match(lastModal(shim).content, /high-risk/)
    if (res.data.request_id) assert.ok(lastModal(shim).content.includes(res.data.request_id), 'request_id shown')
    assert.equal(page.data.notice.kind, 'error')
    assert.equal(page.data.user, null)
    assert.equal(shim.wx.getStorageSync(TOKEN_KEY), '')
    assertOneRequestThenFreshCode(shim)
  })

  it('honours Retry-After when WeChat rate-limits the login (45011 -> 429)', SLOW, async () => {
    const { user, shim, tap } = await start()
    await sim.fault({ endpoint: 'jscode2session', count: 10, errcode: 45011 })

    await tap(await allowed(user))

    const res = shim.log.requests[0].response
    assert.equal(res.statusCode, 429)
    assert.match(res.data.reason, /RATE_LIMITED$/)
    const header = res.header['retry-after']
    const secs = /^\d+$/.test(header || '') ? Math.min(Math.max(Number(header), 1), 3600) : 60
    assert.match(lastModal(shim).content, new RegExp(`${secs} 秒后再试`))
    assertOneRequestThenFreshCode(shim)

    // Tapping again right away does not send anything.
    await tap(await allowed(user))
    assert.equal(shim.log.requests.length, 1)
    assert.match(shim.log.toasts[shim.log.toasts.length - 1].title, /秒后再试/)
  })

  it('asks for another tap with a fresh code after an invalid login code (401), and that tap logs in', SLOW, async () => {
    const { user, shim, page, tap } = await start()
    await sim.fault({ endpoint: 'jscode2session', count: 1, errcode: 40029 })

    await tap(await allowed(user))

    const first = shim.log.requests[0].response
    assert.equal(first.statusCode, 401)
    assert.equal(first.data.reason, 'LOGIN_CODE_INVALID')
    assert.match(lastModal(shim).content, /再点一次/)
    assertOneRequestThenFreshCode(shim)
    await sim.clearFaults()

    await tap(await allowed(user))

    assert.equal(shim.log.requests.length, 2)
    assert.equal(shim.log.requests[1].body.code, shim.log.logins[1].code, 'the second tap used the fresh code')
    assert.equal(shim.log.requests[1].response.statusCode, 200)
    assert.equal(page.data.user.user_id, shim.log.requests[1].response.data.user_id)
  })

  it('re-runs wx.login and asks for another tap when the legacy data is from a rotated session (409)', SLOW, async () => {
    const { user, shim, page, tap } = await start()
    // The session_key changed between the load-time wx.login and the tap (say
    // another wx.login elsewhere rotated it): the button's payload is encrypted
    // with a key the page's login code does not carry. A second simulated
    // WeChat session plays that rotated key.
    const rotated = await allowed(`${user}-rotated`, { legacy: true })

    await tap(rotated)

    const res = shim.log.requests[0].response
    assert.equal(res.statusCode, 409)
    assert.equal(res.data.reason, 'SESSION_KEY_STALE')
    assert.match(lastModal(shim).content, /再点一次/)
    assert.equal(shim.wx.getStorageSync(TOKEN_KEY), '')
    assertOneRequestThenFreshCode(shim)
    assert.equal(page.data.codeReady, true)

    // The user taps again: the fresh login and the new payload match.
    await tap(await allowed(user, { legacy: true }))

    assert.equal(shim.log.requests.length, 2)
    assert.equal(shim.log.requests[1].body.code, shim.log.logins[1].code)
    assert.equal(shim.log.requests[1].response.statusCode, 200, JSON.stringify(shim.log.requests[1].response.data))
    assert.equal(page.data.user.user_id, shim.log.requests[1].response.data.user_id)
  })

  it('explains a network failure on launch and offers a retry, not the phone button', SLOW, async () => {
    const port = await closedPort()
    const { shim, page } = await start({ gatewayUrl: `http://127.0.0.1:${port}` })

    assert.equal(shim.log.requests.length, 1, 'the silent login, once')
    assert.match(shim.log.requests[0].error, /^request:fail/)
    assert.match(lastModal(shim).content, /网络连接失败/)
    assert.equal(lastModal(shim).title, '网络异常')
    assert.equal(page.data.needPhone, false, 'only PHONE_REQUIRED shows the phone button')
    assert.equal(page.data.canRetry, true)
    assert.equal(page.data.user, null)
    assert.equal(shim.wx.getStorageSync(TOKEN_KEY), '')

    // The retry button runs one more silent login (a new code), and fails the same way.
    await page.onRetry()
    await shim.idle()
    assert.equal(shim.log.requests.length, 2)
    assert.equal(shim.log.logins.length, 2, 'a fresh wx.login for the retry')
    assert.equal(page.data.canRetry, true)
  })

  it('keeps its code while the session lives and logs in again when wx.checkSession fails', SLOW, async () => {
    const { shim, page } = await start()
    assert.equal(shim.log.logins.length, 1)

    await page.onShow()
    await shim.idle()
    assert.equal(shim.log.logins.length, 1, 'no wx.login while the session is alive')

    shim.state.sessionAlive = false
    await page.onShow()
    await shim.idle()
    assert.equal(shim.log.logins.length, 2, 'a new wx.login after checkSession failed')
    assert.equal(page.data.codeReady, true)
  })

  it('uses the wx.login in flight when tapped before it finished, and ignores a second tap while busy', SLOW, async () => {
    const { user, shim, page } = await start()
    const detail = await allowed(user)
    // The prepared code expired: a new wx.login is running when the user taps.
    page.loginCode = null
    const preparing = page.prepareLoginCode()
    shim.mark('tap')
    const first = page.onGetPhoneNumber({ type: 'getphonenumber', detail })
    const second = page.onGetPhoneNumber({ type: 'getphonenumber', detail })
    await Promise.all([preparing, first, second])
    await shim.idle()

    assert.equal(shim.log.requests.length, 1)
    assert.equal(shim.log.requests[0].body.code, shim.log.logins[1].code, 'the code of the wx.login in flight')
    assert.equal(shim.log.requests[0].response.statusCode, 200)
    assert.equal(shim.log.logins.length, 3, 'the prepared one, the one in flight, the fresh one after the request')
  })

  // --- sessions: silent login, both tokens, refresh on 401, logout ---------------

  // Registers a user through the phone button; resolves the stored session.
  async function register(user) {
    const first = await start({ user })
    assert.equal(first.launch.requests.length, 1, 'a silent login first')
    assert.deepEqual(first.launch.requests[0].body, { code: first.launch.logins[0].code, appId: env.appId })
    assert.equal(first.launch.requests[0].response.statusCode, 428)
    assert.equal(first.page.data.needPhone, true, 'PHONE_REQUIRED shows the phone button')
    await first.tap(await allowed(user))
    return first.shim.wx.getStorageSync(TOKEN_KEY)
  }

  it('logs a registered user in silently on launch: no phone button, both tokens stored', SLOW, async () => {
    const user = newUser()
    const registered = await register(user)
    assert.ok(registered.refresh_token, 'the refresh token is stored')
    assert.ok(registered.refresh_expires_at > Date.now() + 24 * 3600 * 1000)

    // Next launch, on a device with no stored session (say a reinstall).
    const { shim, page } = await start({ user })

    assert.equal(shim.log.requests.length, 1)
    const req = shim.log.requests[0]
    assert.deepEqual(req.body, { code: shim.log.logins[0].code, appId: env.appId }, 'the code alone')
    assert.equal(req.response.statusCode, 200, JSON.stringify(req.response.data))
    assert.equal(req.response.data.user_id, registered.user_id)
    assert.equal(req.response.data.is_new_user, false)
    assert.equal(page.data.user.user_id, registered.user_id)
    assert.equal(page.data.needPhone, false)
    const stored = shim.wx.getStorageSync(TOKEN_KEY)
    assert.equal(stored.access_token, req.response.data.access_token)
    assert.equal(stored.refresh_token, req.response.data.refresh_token)
    assert.equal(shim.log.logins.length, 1, 'no code is prepared: there is no button to tap')
  })

  it('uses a stored session on launch without logging in', SLOW, async () => {
    const user = newUser()
    const registered = await register(user)
    const { shim, page } = await start({ user, storage: registered })
    assert.equal(shim.log.logins.length, 0)
    assert.equal(shim.log.requests.length, 0)
    assert.equal(page.data.user.user_id, registered.user_id)
  })

  it('refreshes once when the API answers 401 and retries the call with the new token', SLOW, async () => {
    const api = await startApi(env.gatewayUrl)
    try {
      const user = newUser()
      const registered = await register(user)
      // The stored access token no longer works (expired, say); the refresh token does.
      const stale = Object.assign({}, registered, { access_token: registered.access_token.slice(0, -4) + 'AAAA' })
      const { shim, page } = await start({ user, storage: stale, apiUrl: api.url })

      const out = await page.onCallApi()
      await shim.idle()

      assert.deepEqual(api.calls.map((c) => c.status), [401, 200], 'one 401, then the retried call')
      const urls = shim.log.requests.map((r) => r.url)
      assert.deepEqual(urls, [`${api.url}/me`, `${env.gatewayUrl}/auth/refresh`, `${api.url}/me`])
      assert.deepEqual(shim.log.requests[1].body, { refreshToken: registered.refresh_token, appId: env.appId })
      assert.equal(out.refreshed, true)
      assert.equal(page.data.api.statusCode, 200)
      assert.equal(page.data.api.data.sub, registered.user_id)
      const stored = shim.wx.getStorageSync(TOKEN_KEY)
      assert.notEqual(stored.refresh_token, registered.refresh_token, 'the new refresh token is stored')
      assert.notEqual(stored.access_token, stale.access_token)
      assert.equal(stored.openid, registered.openid)

      // A second 401-free call sends the new token and does not refresh.
      await page.onCallApi()
      await shim.idle()
      assert.equal(shim.log.requests.filter((r) => r.url.endsWith('/auth/refresh')).length, 1)
    } finally {
      await api.close()
    }
  })

  it('forgets a session that ended (refresh answers 401) and logs in silently again', SLOW, async () => {
    const api = await startApi(env.gatewayUrl)
    try {
      const user = newUser()
      const registered = await register(user)
      const broken = Object.assign({}, registered, {
        access_token: 'not-a-token',
        refresh_token: registered.refresh_token.slice(0, -4) + 'AAAA'
      })
      const { shim, page } = await start({ user, storage: broken, apiUrl: api.url })

      const out = await page.onCallApi()
      await shim.idle()

      assert.equal(out.relogin, true)
      const refresh = shim.log.requests.find((r) => r.url.endsWith('/auth/refresh'))
      assert.equal(refresh.response.statusCode, 401)
      assert.equal(refresh.response.data.reason, 'REFRESH_TOKEN_INVALID')
      const login = shim.log.requests[shim.log.requests.length - 1]
      assert.ok(login.url.endsWith('/auth/mp_login'))
      assert.deepEqual(Object.keys(login.body).sort(), ['appId', 'code'], 'a silent login')
      assert.equal(login.response.statusCode, 200)
      assert.equal(page.data.user.user_id, registered.user_id)
      assert.equal(shim.wx.getStorageSync(TOKEN_KEY).refresh_token, login.response.data.refresh_token)
    } finally {
      await api.close()
    }
  })

  it('logs out at the gateway: the session is revoked and both tokens are forgotten', SLOW, async () => {
    const user = newUser()
    const registered = await register(user)
    const { shim, page } = await start({ user, storage: registered })

    await page.onLogout()
    await shim.idle()

    const req = shim.log.requests[0]
    assert.equal(req.url, `${env.gatewayUrl}/auth/logout`)
    assert.deepEqual(req.body, { refreshToken: registered.refresh_token, appId: env.appId })
    assert.equal(req.response.statusCode, 200, JSON.stringify(req.response.data))
    assert.equal(req.response.data.sessions_revoked, 1)
    assert.equal(shim.wx.getStorageSync(TOKEN_KEY), '')
    assert.equal(page.data.user, null)
    assert.equal(page.data.loggedOut, true)
    assert.equal(page.data.needPhone, false, 'a registered user logs in again without the phone button')

    // The old refresh token is dead at the gateway.
    const res = await fetch(`${env.gatewayUrl}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refreshToken: registered.refresh_token })
    })
    assert.equal(res.status, 401)
    assert.equal((await res.json()).reason, 'SESSION_REVOKED')

    // "Log in" runs a silent login.
    await page.onRetry()
    await shim.idle()
    assert.equal(page.data.user.user_id, registered.user_id)
  })
}
