// Login plumbing for the login page: wx.login / wx.checkSession / wx.request as
// promises, the phone-button result check, the request bodies, the table of
// gateway errors (what to tell the user, what to do next), storage of both
// tokens, the refresh (once, shared by concurrent callers), API calls that
// refresh once on a 401 and retry, and logout at the gateway.
// No page state lives here; pages/login/login.js decides when to call what.

const TOKEN_STORAGE_KEY = 'mp_auth_token'

// WeChat login codes live 5 minutes; refresh ours a little before that.
const LOGIN_CODE_MAX_AGE_MS = 4 * 60 * 1000

// Used when a 429 carries no usable Retry-After (WeChat's quota is per minute).
const DEFAULT_RETRY_AFTER_SECS = 60

// What the user should do after a failed attempt.
const NEXT = {
  PHONE: 'phone', // a silent login found no registered user: show the phone button
  RELOGIN: 'relogin', // the session ended (logged out, expired, revoked): log in again
  TAP_AGAIN: 'tap_again', // a fresh wx.login code is fetched; tap the button again
  WAIT: 'wait', // rate limited: the button stays locked for Retry-After seconds
  LATER: 'later', // the service or WeChat is down: try again later
  CONTACT: 'contact', // nothing the user can fix: support or the developer must
  CHECK_NETWORK: 'check_network', // the request never reached the gateway
  NONE: 'none' // the user cancelled; nothing to do
}

const TITLES = {
  phone: '请使用手机号登录',
  relogin: '登录已失效',
  tap_again: '请再试一次',
  wait: '请稍后再试',
  later: '服务暂不可用',
  contact: '无法登录',
  check_network: '网络异常',
  none: '未登录'
}

const TAP_AGAIN_LOGIN = {
  next: NEXT.TAP_AGAIN,
  zh: '登录凭证已失效，请再点一次“一键登录”。',
  en: 'Your login code expired. Please tap "一键登录" again.'
}
const SESSION_CHANGED = {
  next: NEXT.TAP_AGAIN,
  zh: '微信登录状态已变化，请再点一次“一键登录”。',
  en: 'Your WeChat session changed. Please tap "一键登录" again.'
}
const SERVICE_DOWN = {
  next: NEXT.LATER,
  zh: '登录服务暂时不可用，请稍后再试。',
  en: 'The login service is temporarily unavailable. Please try again later.'
}
const BAD_REQUEST = {
  next: NEXT.CONTACT,
  zh: '登录请求被拒绝，小程序配置可能有误，请联系开发者。',
  en: "The login request was rejected; the mini program's setup looks wrong. Please contact the developer."
}

// Every `reason` the gateway returns (JSON `{reason, message, action, field?, request_id}`).
// `{secs}` is replaced by the Retry-After delay.
const SESSION_ENDED = {
  next: NEXT.RELOGIN,
  zh: '登录已失效，请重新登录。',
  en: 'Your session has ended. Please log in again.'
}

const REASONS = {
  // 428: a silent login ({code} alone) of a WeChat user who is not registered yet.
  PHONE_REQUIRED: {
    next: NEXT.PHONE,
    zh: '首次登录请点击“一键登录”授权手机号。',
    en: 'First time here: tap "一键登录" to share your phone number.'
  },
  // 401 from /auth/refresh or /auth/logout: the session is gone; log in again.
  REFRESH_TOKEN_INVALID: SESSION_ENDED,
  REFRESH_TOKEN_WRONG_APP: SESSION_ENDED,
  REFRESH_TOKEN_REUSED: SESSION_ENDED,
  SESSION_REVOKED: SESSION_ENDED,
  SESSION_EXPIRED: SESSION_ENDED,
  TOKEN_INVALID: SESSION_ENDED,
  LOGIN_CODE_INVALID: TAP_AGAIN_LOGIN, // 401: the wx.login code is unknown or expired
  LOGIN_CODE_USED: TAP_AGAIN_LOGIN, // 401: the wx.login code was already exchanged
  PHONE_CODE_INVALID: {
    next: NEXT.TAP_AGAIN,
    zh: '手机号授权已失效，请再点一次“一键登录”。',
    en: 'The phone number authorization expired. Please tap "一键登录" again.'
  },
  USER_BLOCKED: {
    next: NEXT.CONTACT,
    zh: '微信判定该账号存在安全风险，暂时无法登录。如有疑问请联系客服。',
    en: 'WeChat flagged this account as high-risk and blocked the login. Contact support if this is a mistake.'
  },
  SESSION_KEY_STALE: SESSION_CHANGED, // 409: legacy data encrypted with an older session_key
  ENCRYPTED_DATA_EXPIRED: {
    next: NEXT.TAP_AGAIN,
    zh: '手机号授权已过期，请再点一次“一键登录”。',
    en: 'The phone number authorization is too old. Please tap "一键登录" again.'
  },
  WECHAT_RATE_LIMITED: {
    next: NEXT.WAIT,
    zh: '微信登录太频繁，请 {secs} 秒后再试。',
    en: 'Too many WeChat logins. Please try again in {secs} s.'
  },
  RATE_LIMITED: {
    next: NEXT.WAIT,
    zh: '操作太频繁，请 {secs} 秒后再试。',
    en: 'Too many attempts. Please try again in {secs} s.'
  },
  WECHAT_UNAVAILABLE: {
    next: NEXT.LATER,
    zh: '微信服务暂时不可用，请稍后再试。',
    en: 'WeChat is temporarily unavailable. Please try again later.'
  },
  DATABASE_UNAVAILABLE: SERVICE_DOWN,
  BACKEND_UNAVAILABLE: SERVICE_DOWN,
  TIMEOUT: {
    next: NEXT.LATER,
    zh: '登录服务响应超时，请稍后再试。',
    en: 'The login service timed out. Please try again later.'
  },
  INVALID_ARGUMENT: BAD_REQUEST,
  MALFORMED_JSON: BAD_REQUEST,
  APP_ID_REQUIRED: BAD_REQUEST,
  UNKNOWN_APP: BAD_REQUEST,
  WATERMARK_MISMATCH: BAD_REQUEST,
  WECHAT_APP_MISCONFIGURED: BAD_REQUEST,
  INTERNAL: {
    next: NEXT.LATER,
    zh: '服务器开小差了，请稍后再试。',
    en: 'Something went wrong on our side. Please try again later.'
  }
}

// When the gateway (or a proxy in front of it) answers without a known reason.
function fallbackForStatus(statusCode) {
  if (statusCode === 428) return REASONS.PHONE_REQUIRED
  if (statusCode === 401) return TAP_AGAIN_LOGIN
  if (statusCode === 409) return SESSION_CHANGED
  if (statusCode === 403) return REASONS.USER_BLOCKED
  if (statusCode === 429) return REASONS.RATE_LIMITED
  if (statusCode === 504) return REASONS.TIMEOUT
  if (statusCode >= 400 && statusCode < 500) return BAD_REQUEST
  if (statusCode >= 500) return SERVICE_DOWN
  return REASONS.INTERNAL // e.g. a 200 without a token
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success(res) {
        if (res && res.code) resolve(res.code)
        else reject(new Error((res && res.errMsg) || 'login:fail no code'))
      },
      fail(err) {
        reject(new Error((err && err.errMsg) || 'login:fail'))
      }
    })
  })
}

// Resolves true while the session of the last wx.login is still valid.
function checkSession() {
  return new Promise((resolve) => {
    wx.checkSession({
      success: () => resolve(true),
      fail: () => resolve(false)
    })
  })
}

// wx.request as a promise: resolves with the response for every HTTP status,
// rejects only when no response arrived (offline, DNS, TLS, timeout).
function request(options) {
  return new Promise((resolve, reject) => {
    wx.request(Object.assign({}, options, {
      success: resolve,
      fail: reject
    }))
  })
}

// null when the phone button succeeded; otherwise what to tell the user.
// Anything but `getPhoneNumber:ok` is a failure; WeChat's wording varies by
// platform ("fail user deny" on iOS/devtools, "fail:user deny" on Android).
function phoneButtonProblem(detail) {
  const d = detail || {}
  const errMsg = String(d.errMsg || '')
  const errno = Number(d.errno)
  if (errno === 1400001) {
    return {
      kind: 'quota',
      next: NEXT.CONTACT,
      zh: '手机号快捷登录次数已用完，请联系开发者或稍后再试。',
      en: "This mini program's phone-number login quota is used up. Please contact the developer."
    }
  }
  if (errno === 104 || /privacy/i.test(errMsg)) {
    return {
      kind: 'privacy',
      next: NEXT.NONE,
      zh: '需要先同意隐私保护指引，才能使用手机号登录。',
      en: 'Please accept the privacy policy first to log in with your phone number.'
    }
  }
  if (errMsg === 'getPhoneNumber:ok') {
    if (d.code || (d.encryptedData && d.iv)) return null
    return {
      kind: 'no_data',
      next: NEXT.TAP_AGAIN,
      zh: '未能获取手机号，请再试一次或升级微信。',
      en: 'WeChat returned no phone number. Please try again or update WeChat.'
    }
  }
  if (/deny/i.test(errMsg)) {
    return {
      kind: 'deny',
      next: NEXT.NONE,
      zh: '你已取消授权，需要手机号才能登录。',
      en: 'You declined to share your phone number, which is needed to log in.'
    }
  }
  if (/no permission/i.test(errMsg)) {
    return {
      kind: 'no_permission',
      next: NEXT.CONTACT,
      zh: '该小程序暂不支持手机号登录（未认证），请联系开发者。',
      en: 'This mini program may not use phone-number login (not verified). Please contact the developer.'
    }
  }
  return {
    kind: 'failed',
    next: NEXT.TAP_AGAIN,
    zh: '获取手机号失败，请再试一次。',
    en: 'Could not get your phone number. Please try again.'
  }
}

// The JSON body of POST /auth/mp_login. The new flow (`phoneCode`) is
// preferred; the legacy `encryptedData` + `iv` are sent only by clients that
// return no `code` (WeChat < 8.0.16, some devtools versions).
function loginBody(code, detail, appId) {
  const body = { code }
  if (appId) body.appId = appId
  if (detail.code) {
    body.phoneCode = detail.code
  } else {
    body.encryptedData = detail.encryptedData
    body.iv = detail.iv
  }
  return body
}

// Case-insensitive header lookup (wx.request keeps the server's spelling).
function headerValue(header, name) {
  if (!header) return undefined
  const wanted = name.toLowerCase()
  const key = Object.keys(header).find((k) => k.toLowerCase() === wanted)
  return key === undefined ? undefined : header[key]
}

// Seconds from a Retry-After header (delta-seconds or HTTP-date), 1..3600.
function retryAfterSecs(header) {
  const raw = headerValue(header, 'Retry-After')
  let secs = NaN
  if (raw !== undefined && raw !== null && String(raw).trim() !== '') {
    const text = String(raw).trim()
    secs = /^\d+$/.test(text) ? Number(text) : Math.ceil((Date.parse(text) - Date.now()) / 1000)
  }
  if (!Number.isFinite(secs)) secs = DEFAULT_RETRY_AFTER_SECS
  return Math.min(Math.max(secs, 1), 3600)
}

// Turns a non-success response into what to show and what to do next.
function describeFailure(res) {
  const body = res.data && typeof res.data === 'object' ? res.data : {}
  const reason = typeof body.reason === 'string' ? body.reason : ''
  const entry = REASONS[reason] || fallbackForStatus(res.statusCode)
  const failure = {
    reason: reason || 'HTTP_' + res.statusCode,
    statusCode: res.statusCode,
    next: entry.next,
    title: TITLES[entry.next],
    zh: entry.zh,
    en: entry.en,
    requestId: typeof body.request_id === 'string' ? body.request_id : '',
    retryAfterSecs: 0
  }
  if (entry.next === NEXT.WAIT) {
    failure.retryAfterSecs = retryAfterSecs(res.header)
    failure.zh = failure.zh.replace('{secs}', failure.retryAfterSecs)
    failure.en = failure.en.replace('{secs}', failure.retryAfterSecs)
  }
  return failure
}

// The wx.request `fail` callback: the gateway was not reached or did not answer.
function networkFailure(err) {
  const errMsg = String((err && err.errMsg) || '')
  const timedOut = /timeout|timed out/i.test(errMsg)
  return {
    reason: timedOut ? 'NETWORK_TIMEOUT' : 'NETWORK_ERROR',
    statusCode: 0,
    next: NEXT.CHECK_NETWORK,
    title: TITLES.check_network,
    zh: timedOut ? '网络请求超时，请检查网络后重试。' : '网络连接失败，请检查网络后重试。',
    en: timedOut
      ? 'The request timed out. Check your network and try again.'
      : 'Could not reach the login service. Check your network and try again.',
    requestId: '',
    retryAfterSecs: 0,
    errMsg
  }
}

// Stores the tokens of a login or refresh answer; returns the stored record.
// `previous` keeps the fields a refresh answer does not repeat (openid).
function saveToken(data, previous) {
  const now = Date.now()
  const record = {
    access_token: data.access_token,
    expires_at: now + Number(data.expires_in) * 1000,
    refresh_token: data.refresh_token,
    refresh_expires_at: now + Number(data.refresh_expires_in) * 1000,
    user_id: data.user_id,
    openid: data.openid || (previous && previous.openid)
  }
  wx.setStorageSync(TOKEN_STORAGE_KEY, record)
  return record
}

// The stored session while its refresh token may still work (the access token
// may have expired: callApi refreshes it), else null (and it is removed).
function loadToken() {
  const record = wx.getStorageSync(TOKEN_STORAGE_KEY)
  if (!record || !record.access_token || !record.refresh_token) return null
  if (!(record.refresh_expires_at > Date.now())) {
    wx.removeStorageSync(TOKEN_STORAGE_KEY)
    return null
  }
  return record
}

function clearToken() {
  wx.removeStorageSync(TOKEN_STORAGE_KEY)
}

// `Authorization` header for your own API calls, or {} when logged out.
function authorizationHeader() {
  const record = loadToken()
  return record ? { Authorization: 'Bearer ' + record.access_token } : {}
}

function gatewayUrl(base, path) {
  return String(base).replace(/\/+$/, '') + path
}

// The JSON body of a silent login: the wx.login code alone.
function silentLoginBody(code, appId) {
  const body = { code }
  if (appId) body.appId = appId
  return body
}

// One refresh at a time: concurrent callers (several API calls that all got a
// 401) share it, so the refresh token is presented once.
let refreshing = null

// Exchanges the stored refresh token for a new pair at POST /auth/refresh.
// Resolves {ok: true, record}, or {ok: false, relogin, failure}: `relogin` when
// the session is over (the tokens are then removed), otherwise the tokens are
// kept (a network error or a 503: the same refresh token may be sent again
// shortly, the gateway answers the same new pair).
function refresh({ gatewayBaseUrl, appId, timeoutMs }) {
  if (refreshing) return refreshing
  const record = loadToken()
  if (!record) return Promise.resolve({ ok: false, relogin: true, failure: null })
  const data = { refreshToken: record.refresh_token }
  if (appId) data.appId = appId
  refreshing = request({
    url: gatewayUrl(gatewayBaseUrl, '/auth/refresh'),
    method: 'POST',
    header: { 'content-type': 'application/json' },
    data,
    dataType: 'json',
    timeout: timeoutMs
  })
    .then(
      (res) => {
        if (res.statusCode === 200 && res.data && res.data.refresh_token) {
          return { ok: true, record: saveToken(res.data, record) }
        }
        const failure = describeFailure(res)
        const relogin = res.statusCode === 401
        if (relogin) clearToken()
        return { ok: false, relogin, failure }
      },
      (err) => ({ ok: false, relogin: false, failure: networkFailure(err) })
    )
    .finally(() => {
      refreshing = null
    })
  return refreshing
}

// Calls your own API with the access token. On a 401 it refreshes once and
// retries the call once with the new token. Resolves {res} (any HTTP status),
// or {relogin: true, failure} when the session is over, or {failure} when the
// refresh could not be done now (network, 503).
function callApi(options, gateway) {
  const record = loadToken()
  if (!record) return Promise.resolve({ relogin: true, failure: null })
  const send = (token) =>
    request(
      Object.assign({}, options, {
        header: Object.assign({}, options.header, { Authorization: 'Bearer ' + token })
      })
    )
  return send(record.access_token).then((res) => {
    if (res.statusCode !== 401) return { res }
    return refresh(gateway).then((r) => {
      if (!r.ok) return { relogin: r.relogin, failure: r.failure }
      return send(r.record.access_token).then((again) => ({ res: again, refreshed: true }))
    })
  })
}

// Logs the session out at POST /auth/logout (with the refresh token) and
// forgets both tokens, whatever the gateway answers (the local logout must not
// depend on the network). `all`: every session of the user. Resolves with the
// gateway's answer, or null when nothing was stored or it was unreachable.
function logout({ gatewayBaseUrl, appId, timeoutMs }, all = false) {
  const record = loadToken()
  clearToken()
  if (!record) return Promise.resolve(null)
  const data = { refreshToken: record.refresh_token }
  if (appId) data.appId = appId
  return request({
    url: gatewayUrl(gatewayBaseUrl, all ? '/auth/logout?all=true' : '/auth/logout'),
    method: 'POST',
    header: { 'content-type': 'application/json' },
    data,
    dataType: 'json',
    timeout: timeoutMs
  }).then(
    (res) => res,
    () => null
  )
}

module.exports = {
  TOKEN_STORAGE_KEY,
  LOGIN_CODE_MAX_AGE_MS,
  NEXT,
  REASONS,
  wxLogin,
  checkSession,
  request,
  phoneButtonProblem,
  loginBody,
  headerValue,
  retryAfterSecs,
  describeFailure,
  networkFailure,
  saveToken,
  loadToken,
  clearToken,
  authorizationHeader,
  silentLoginBody,
  refresh,
  callApi,
  logout
}
