// One-tap login (小程序一键登录) against the mp-auth gateway.
//
// The order matters:
// 1. wx.login runs when the page loads (and again when wx.checkSession says the
//    session expired, or after each attempt): the code is ready BEFORE the tap.
// 2. The phone button's callback only sends that code with the phone proof.
//    It never calls wx.login: a new login can rotate the session_key that
//    encrypted the legacy `encryptedData`, and the server could not decrypt it.
// 3. A code is single-use: after every attempt a fresh one is fetched in the
//    background, and a failed login is never retried automatically.
//
// Event handlers return promises so tests can wait for them; WeChat ignores them.

const auth = require('../../utils/auth')
const config = require('../../config')

Page({
  data: {
    // The logged-in user: {user_id, openid, expires_at}, or null.
    user: null,
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
    }
    return this.prepareLoginCode()
  },

  onShow() {
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
        url: config.gatewayBaseUrl.replace(/\/+$/, '') + '/auth/mp_login',
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

  onLogout() {
    auth.clearToken()
    getApp().globalData.auth = null
    this.setData({ user: null, notice: null })
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
