// Silent login (静默登录) and one-tap login (小程序一键登录) against the mp-auth gateway.
//
// 1. On launch, a stored session is used as it is. Otherwise the page tries a
//    silent login: wx.login and the code alone. A registered user is logged in
//    without any button. Only `PHONE_REQUIRED` shows the "一键登录" button.
// 2. For the button, a fresh wx.login runs BEFORE the tap (and again when
//    wx.checkSession says the session expired, or after each attempt). The
//    phone button's callback only sends that code with the phone proof. It
//    never calls wx.login: a new login can rotate the session_key that
//    encrypted the legacy `encryptedData`, and the server could not decrypt it.
// 3. A code is single-use: after every attempt a fresh one is fetched in the
//    background, and a failed login is never retried automatically.
// 4. Both tokens are stored. API calls send the access token; on a 401 the page
//    refreshes once and retries the call once. A session that ended (refresh
//    answered 401) is forgotten and the page logs in silently again.
// 5. Logout revokes the session at the gateway, then forgets both tokens.
//
// Event handlers return promises so tests can wait for them; WeChat ignores them.

const auth = require('../../utils/auth')
const config = require('../../config')

Page({
  data: {
    // The logged-in user: {user_id, openid, expires_at}, or null.
    user: null,
    // True while the launch-time silent login runs.
    checking: false,
    // True when the silent login answered PHONE_REQUIRED: the button is shown.
    needPhone: false,
    // True when the silent login failed otherwise (network, service down): a retry button.
    canRetry: false,
    // True after a logout: a "log in" button (a silent login) is shown.
    loggedOut: false,
    // The last answer of our own API (the "call API" button), or null.
    api: null,
    // True while the login request runs (the button shows a spinner).
    busy: false,
    // True once a wx.login code is ready for the next tap.
    codeReady: false,
    // The last outcome shown on the page: {kind, zh, en, requestId}, or null.
    notice: null
  },

  onLoad() {
    this.loginCode = null // {value, obtainedAt}
    this.codePromise = null // the wx.login in flight, if any
    this.waitUntil = 0 // rate limited until this time (ms)
    const saved = auth.loadToken()
    if (saved) {
      getApp().globalData.auth = saved
      this.setData({ user: this.userView(saved) })
      return Promise.resolve()
    }
    return this.silentLogin()
  },

  // wx.login and the code alone. A registered user is logged in; PHONE_REQUIRED
  // shows the phone button (with a fresh code prepared for the tap); any other
  // failure is explained and offers a retry. The code is spent either way.
  silentLogin() {
    if (this.data.checking) return this.silentPromise
    this.setData({ checking: true, needPhone: false, canRetry: false, loggedOut: false })
    this.silentPromise = auth
      .wxLogin()
      .then(
        (code) =>
          auth
            .request({
              url: this.gateway('/auth/mp_login'),
              method: 'POST',
              header: { 'content-type': 'application/json' },
              data: auth.silentLoginBody(code, this.appId()),
              dataType: 'json',
              timeout: config.requestTimeoutMs
            })
            .then(
              (res) => {
                const body = res.data
                if (res.statusCode === 200 && body && typeof body === 'object' && body.access_token) {
                  this.onLoggedIn(body)
                  return null
                }
                const failure = auth.describeFailure(res)
                if (failure.next === auth.NEXT.PHONE) {
                  this.setData({ needPhone: true })
                  return this.prepareLoginCode()
                }
                this.setData({ canRetry: true })
                this.onLoginFailed(failure)
                return null
              },
              (err) => {
                this.setData({ canRetry: true })
                this.onLoginFailed(auth.networkFailure(err))
                return null
              }
            ),
        (err) => {
          console.warn('wx.login failed', err && err.message)
          this.setData({ canRetry: true })
          return null
        }
      )
      .then(() => {
        this.setData({ checking: false })
        this.silentPromise = null
      })
    return this.silentPromise
  },

  // The retry button after a failed silent login, and the login button after a logout.
  onRetry() {
    return this.silentLogin()
  },

  onShow() {
    // Only the phone button needs a fresh code; a silent login fetches its own.
    if (!this.data.needPhone) return Promise.resolve()
    // First show: onLoad's wx.login is still running.
    if (this.codePromise) return this.codePromise
    if (!this.loginCode || Date.now() - this.loginCode.obtainedAt > auth.LOGIN_CODE_MAX_AGE_MS) {
      return this.prepareLoginCode()
    }
    // Back from elsewhere: if the WeChat session expired, the code is worthless.
    return auth.checkSession().then((alive) => {
      if (!alive) return this.prepareLoginCode()
      return this.loginCode && this.loginCode.value
    })
  },

  // Gets a fresh wx.login code for the next tap. Resolves with the code, or
  // null when wx.login failed (the next tap then explains and tries again).
  prepareLoginCode() {
    if (this.codePromise) return this.codePromise
    this.loginCode = null
    this.setData({ codeReady: false })
    this.codePromise = auth.wxLogin().then(
      (code) => {
        this.loginCode = { value: code, obtainedAt: Date.now() }
        this.codePromise = null
        this.setData({ codeReady: true })
        return code
      },
      (err) => {
        console.warn('wx.login failed', err && err.message)
        this.codePromise = null
        return null
      }
    )
    return this.codePromise
  },

  // <button open-type="getPhoneNumber" bindgetphonenumber="onGetPhoneNumber">
  onGetPhoneNumber(e) {
    const detail = (e && e.detail) || {}
    const problem = auth.phoneButtonProblem(detail)
    if (problem) {
      this.showProblem(problem)
      return Promise.resolve()
    }
    if (this.data.busy) return Promise.resolve()
    const waitSecs = Math.ceil((this.waitUntil - Date.now()) / 1000)
    if (waitSecs > 0) {
      wx.showToast({ title: `请 ${waitSecs} 秒后再试`, icon: 'none' })
      return Promise.resolve()
    }
    this.setData({ busy: true })
    // Use the code obtained before the tap, or the wx.login already running.
    const pending = this.loginCode
      ? Promise.resolve(this.loginCode.value)
      : this.codePromise || Promise.resolve(null)
    return pending.then((code) => {
      if (!code) {
        this.setData({ busy: false })
        this.showProblem({
          kind: 'login_unavailable',
          next: auth.NEXT.TAP_AGAIN,
          zh: '微信登录暂时失败，请稍后再点一次。',
          en: 'WeChat login is not ready. Please tap again in a moment.'
        })
        return this.prepareLoginCode()
      }
      this.loginCode = null // single-use: this attempt consumes it
      return this.sendLogin(code, detail).then(() => this.prepareLoginCode())
    })
  },

  sendLogin(code, detail) {
    wx.showLoading({ title: '登录中', mask: true })
    return auth
      .request({
        url: this.gateway('/auth/mp_login'),
        method: 'POST',
        header: { 'content-type': 'application/json' },
        data: auth.loginBody(code, detail, this.appId()),
        dataType: 'json',
        timeout: config.requestTimeoutMs
      })
      .then(
        (res) => {
          wx.hideLoading()
          const body = res.data
          if (res.statusCode === 200 && body && typeof body === 'object' && body.access_token) {
            this.onLoggedIn(body)
          } else {
            this.onLoginFailed(auth.describeFailure(res))
          }
        },
        (err) => {
          wx.hideLoading()
          this.onLoginFailed(auth.networkFailure(err))
        }
      )
      .then(() => this.setData({ busy: false }))
  },

  onLoggedIn(body) {
    const record = auth.saveToken(body)
    getApp().globalData.auth = record
    this.setData({
      user: this.userView(record),
      needPhone: false,
      canRetry: false,
      loggedOut: false,
      notice: {
        kind: 'success',
        zh: body.is_new_user ? '注册并登录成功' : '登录成功',
        en: body.is_new_user ? 'Account created, you are logged in.' : 'You are logged in.',
        requestId: ''
      }
    })
    wx.showToast({ title: '登录成功', icon: 'success' })
  },

  onLoginFailed(failure) {
    if (failure.next === auth.NEXT.WAIT) {
      this.waitUntil = Date.now() + failure.retryAfterSecs * 1000
    }
    this.setData({
      notice: { kind: 'error', zh: failure.zh, en: failure.en, requestId: failure.requestId }
    })
    const support = failure.requestId ? `\n(request_id: ${failure.requestId})` : ''
    wx.showModal({
      title: failure.title,
      content: `${failure.zh}\n${failure.en}${support}`,
      showCancel: false,
      confirmText: '知道了'
    })
  },

  // Phone-button failures: nothing was sent.
  showProblem(problem) {
    this.setData({ notice: { kind: 'warn', zh: problem.zh, en: problem.en, requestId: '' } })
    if (problem.kind === 'deny') {
      wx.showToast({ title: problem.zh, icon: 'none', duration: 2500 })
    } else {
      wx.showModal({
        title: '无法获取手机号',
        content: `${problem.zh}\n${problem.en}`,
        showCancel: false,
        confirmText: '知道了'
      })
    }
  },

  // Calls our own API (GET {apiBaseUrl}/me) with the access token; a 401 there
  // refreshes once and retries once (utils/auth.js callApi).
  onCallApi() {
    return auth
      .callApi(
        {
          url: String(config.apiBaseUrl).replace(/\/+$/, '') + '/me',
          method: 'GET',
          dataType: 'json',
          timeout: config.requestTimeoutMs
        },
        this.gatewayOptions()
      )
      .then((out) => {
        if (out.res) {
          const record = auth.loadToken()
          if (record) getApp().globalData.auth = record
          this.setData({
            api: { statusCode: out.res.statusCode, data: out.res.data, refreshed: !!out.refreshed },
            user: record ? this.userView(record) : this.data.user
          })
          return out
        }
        if (out.relogin) {
          // The session is over: forget it and log in again (silently if registered).
          getApp().globalData.auth = null
          this.setData({ user: null, api: null })
          return this.silentLogin().then(() => out)
        }
        if (out.failure) this.onLoginFailed(out.failure)
        return out
      })
  },

  // Revokes the session at the gateway, then forgets both tokens.
  onLogout() {
    return auth.logout(this.gatewayOptions()).then((res) => {
      getApp().globalData.auth = null
      this.setData({ user: null, notice: null, api: null, loggedOut: true, needPhone: false })
      return res
    })
  },

  gateway(path) {
    return config.gatewayBaseUrl.replace(/\/+$/, '') + path
  },

  gatewayOptions() {
    return {
      gatewayBaseUrl: config.gatewayBaseUrl,
      appId: this.appId(),
      timeoutMs: config.requestTimeoutMs
    }
  },

  // The AppID sent as `appId`; see config.js.
  appId() {
    if (config.appId !== null && config.appId !== undefined) return config.appId || undefined
    if (typeof wx.getAccountInfoSync !== 'function') return undefined
    const id = wx.getAccountInfoSync().miniProgram.appId
    // Devtools' tourist mode has no real AppID: let a one-app gateway pick its own.
    return id && id !== 'touristappid' ? id : undefined
  },

  userView(record) {
    return {
      user_id: record.user_id,
      openid: record.openid,
      expires_at: record.expires_at,
      expiresText: new Date(record.expires_at).toLocaleString()
    }
  }
})
