// A small `wx` for running the mini program's own JS under Node:
// - wx.login mints a real login code at the WeChat simulator (`POST /_sim/login`);
// - wx.request does real HTTP with fetch, mapped like WeChat does it
//   (success for every HTTP status, fail only without a response, then complete);
// - storage is in memory (JSON copies, as WeChat stores them);
// - toasts, modals and loading indicators are recorded;
// - wx.checkSession answers what the test sets.
// Every call is appended to `log.events` so tests can check the order of things.
//
// Run directly (`node --test` does) it tests itself against a local HTTP server.

'use strict'

function createWx(options) {
  const opts = Object.assign({ user: 'alice', fetch: globalThis.fetch }, options)
  const state = {
    user: opts.user,
    sessionAlive: true,
    // {errMsg} to make the next wx.login calls fail
    loginFailure: null
  }
  const storage = new Map()
  const log = {
    events: [],
    logins: [], // {code, openid}
    requests: [], // {url, method, header, body, response?, error?}
    toasts: [],
    modals: [],
    loadings: [],
    callbackErrors: []
  }
  const inflight = new Set()
  let loadingVisible = false

  function event(type, detail) {
    log.events.push(Object.assign({ type }, detail))
  }

  function track(promise) {
    inflight.add(promise)
    promise.finally(() => inflight.delete(promise))
    return promise
  }

  // WeChat reports an exception thrown by a callback; it never turns into `fail`.
  function call(fn, arg) {
    if (typeof fn !== 'function') return
    try {
      fn(arg)
    } catch (err) {
      log.callbackErrors.push(err)
    }
  }

  function finish(o, ok, result) {
    call(ok ? o.success : o.fail, result)
    call(o.complete, result)
  }

  async function simPost(path, body) {
    const res = await opts.fetch(opts.simUrl.replace(/\/+$/, '') + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`simulator ${path} answered ${res.status}: ${text}`)
    return JSON.parse(text)
  }

  const wx = {
    login(o = {}) {
      event('login')
      const run = (async () => {
        if (state.loginFailure) {
          finish(o, false, { errMsg: state.loginFailure.errMsg || 'login:fail' })
          return
        }
        let minted
        try {
          minted = await simPost('/_sim/login', { app_id: opts.appId, user: state.user })
        } catch (err) {
          finish(o, false, { errMsg: 'login:fail ' + err.message })
          return
        }
        log.logins.push({ code: minted.code, openid: minted.openid })
        finish(o, true, { code: minted.code, errMsg: 'login:ok' })
      })()
      track(run)
    },

    checkSession(o = {}) {
      event('checkSession', { alive: state.sessionAlive })
      const alive = state.sessionAlive
      track(Promise.resolve().then(() =>
        finish(o, alive, { errMsg: alive ? 'checkSession:ok' : 'checkSession:fail session time out' })
      ))
    },

    request(o = {}) {
      const method = String(o.method || 'GET').toUpperCase()
      const header = Object.assign({}, o.header)
      const contentTypeKey = Object.keys(header).find((k) => k.toLowerCase() === 'content-type')
      if (!contentTypeKey) header['content-type'] = 'application/json'
      const contentType = String(header[contentTypeKey || 'content-type'])
      let url = String(o.url)
      let body
      if (o.data !== undefined && o.data !== null) {
        if (method === 'GET') {
          if (typeof o.data === 'object') {
            const q = new URLSearchParams(o.data).toString()
            if (q) url += (url.includes('?') ? '&' : '?') + q
          }
        } else if (typeof o.data === 'string') {
          body = o.data
        } else if (/application\/x-www-form-urlencoded/i.test(contentType)) {
          body = new URLSearchParams(o.data).toString()
        } else {
          body = JSON.stringify(o.data)
        }
      }
      const entry = {
        url,
        method,
        header,
        body: body === undefined ? undefined : parseJson(body)
      }
      log.requests.push(entry)
      event('request', { url, method })

      const controller = new AbortController()
      let why = null
      const timer = setTimeout(() => {
        why = 'timeout'
        controller.abort()
      }, o.timeout || 60000)
      const run = (async () => {
        let result
        let ok = true
        try {
          const res = await opts.fetch(url, { method, headers: header, body, signal: controller.signal })
          const text = await res.text()
          const data = (o.dataType || 'json') === 'json' ? parseJson(text) : text
          result = {
            data,
            statusCode: res.status,
            header: Object.fromEntries(res.headers.entries()),
            cookies: [],
            errMsg: 'request:ok'
          }
          entry.response = { statusCode: res.status, header: result.header, data: parseJson(text) }
        } catch (err) {
          ok = false
          const cause = (err.cause && (err.cause.code || err.cause.message)) || err.message
          result = { errMsg: 'request:fail ' + (why || cause), errno: why === 'timeout' ? 5 : 600001 }
          entry.error = result.errMsg
        } finally {
          clearTimeout(timer)
        }
        event(ok ? 'response' : 'requestFail', { url, statusCode: ok ? result.statusCode : 0 })
        finish(o, ok, result)
      })()
      track(run)
      return {
        abort() {
          why = why || 'abort'
          controller.abort()
        },
        onHeadersReceived() {},
        offHeadersReceived() {}
      }
    },

    setStorageSync(key, value) {
      if (value === undefined) throw new Error('setStorageSync:fail data is undefined')
      storage.set(key, JSON.stringify(value))
    },
    getStorageSync(key) {
      // WeChat answers '' for a missing key.
      return storage.has(key) ? JSON.parse(storage.get(key)) : ''
    },
    removeStorageSync(key) {
      storage.delete(key)
    },
    clearStorageSync() {
      storage.clear()
    },

    showToast(o = {}) {
      log.toasts.push({ title: o.title, icon: o.icon })
      event('showToast', { title: o.title })
      finish(o, true, { errMsg: 'showToast:ok' })
    },
    showModal(o = {}) {
      log.modals.push({ title: o.title, content: o.content })
      event('showModal', { title: o.title })
      // The user taps the (only) confirm button.
      finish(o, true, { confirm: true, cancel: false, errMsg: 'showModal:ok' })
    },
    showLoading(o = {}) {
      loadingVisible = true
      log.loadings.push({ title: o.title })
      event('showLoading')
      finish(o, true, { errMsg: 'showLoading:ok' })
    },
    hideLoading(o = {}) {
      loadingVisible = false
      event('hideLoading')
      finish(o, true, { errMsg: 'hideLoading:ok' })
    },

    getAccountInfoSync() {
      return { miniProgram: { appId: opts.appId, envVersion: 'develop', version: '' } }
    }
  }

  return {
    wx,
    log,
    state,
    get loadingVisible() {
      return loadingVisible
    },
    // Marks a point in the event log (e.g. the tap).
    mark(name) {
      event('mark', { name })
    },
    // Resolves once no wx.login / wx.request / wx.checkSession is in flight.
    async idle() {
      while (inflight.size > 0) await Promise.allSettled([...inflight])
    }
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

module.exports = { createWx }

if (require.main === module) {
  selfTest()
}

function selfTest() {
  const { test } = require('node:test')
  const assert = require('node:assert/strict')
  const http = require('node:http')
  const net = require('node:net')

  function serve(handler) {
    return new Promise((resolve) => {
      const server = http.createServer(handler)
      server.listen(0, '127.0.0.1', () => resolve(server))
    })
  }
  const base = (server) => `http://127.0.0.1:${server.address().port}`
  const settle = (fn) => new Promise((resolve) => fn(resolve))

  test('wx.request maps an error status to success with the parsed body and headers', async (t) => {
    let seen
    const server = await serve((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        seen = { method: req.method, type: req.headers['content-type'], body }
        res.writeHead(429, { 'content-type': 'application/json', 'Retry-After': '7' })
        res.end('{"reason":"RATE_LIMITED"}')
      })
    })
    t.after(() => server.close())
    const shim = createWx({ simUrl: base(server), appId: 'wx1' })
    const order = []
    const res = await settle((done) =>
      shim.wx.request({
        url: base(server) + '/x',
        method: 'POST',
        data: { a: '+/=' },
        success: (r) => order.push('success') && done(r),
        fail: () => order.push('fail'),
        complete: () => order.push('complete')
      })
    )
    await shim.idle()
    assert.deepEqual(order, ['success', 'complete'])
    assert.equal(res.statusCode, 429)
    assert.equal(res.data.reason, 'RATE_LIMITED')
    assert.equal(res.header['retry-after'], '7')
    assert.deepEqual(seen, { method: 'POST', type: 'application/json', body: '{"a":"+/="}' })
    assert.deepEqual(shim.log.requests[0].body, { a: '+/=' })
  })

  test('wx.request calls fail then complete when nothing listens', async () => {
    const port = await new Promise((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = s.address().port
        s.close(() => resolve(p))
      })
    })
    const shim = createWx({ simUrl: 'http://unused', appId: 'wx1' })
    const order = []
    const err = await settle((done) =>
      shim.wx.request({
        url: `http://127.0.0.1:${port}/`,
        success: () => order.push('success'),
        fail: (e) => order.push('fail') && done(e),
        complete: () => order.push('complete')
      })
    )
    await shim.idle()
    assert.deepEqual(order, ['fail', 'complete'])
    assert.match(err.errMsg, /^request:fail /)
  })

  test('wx.request fails with a timeout errMsg when the server is too slow', async (t) => {
    const server = await serve(() => {})
    t.after(() => server.closeAllConnections() || server.close())
    const shim = createWx({ simUrl: base(server), appId: 'wx1' })
    const err = await settle((done) => shim.wx.request({ url: base(server), timeout: 50, fail: done }))
    assert.equal(err.errMsg, 'request:fail timeout')
  })

  test('wx.request leaves a non-JSON body as text', async (t) => {
    const server = await serve((req, res) => res.end('<html>bad gateway</html>'))
    t.after(() => server.close())
    const shim = createWx({ simUrl: base(server), appId: 'wx1' })
    const res = await settle((done) => shim.wx.request({ url: base(server), success: done }))
    assert.equal(res.data, '<html>bad gateway</html>')
  })

  test('wx.login returns the code the simulator mints for the user', async (t) => {
    let asked
    const server = await serve((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        asked = { url: req.url, body: JSON.parse(body) }
        res.setHeader('content-type', 'application/json')
        res.end('{"code":"c0de","openid":"o1"}')
      })
    })
    t.after(() => server.close())
    const shim = createWx({ simUrl: base(server), appId: 'wx1', user: 'bob' })
    const res = await settle((done) => shim.wx.login({ success: done }))
    assert.deepEqual(res, { code: 'c0de', errMsg: 'login:ok' })
    assert.deepEqual(asked, { url: '/_sim/login', body: { app_id: 'wx1', user: 'bob' } })
  })

  test('storage keeps JSON copies and answers empty string for missing keys', () => {
    const { wx } = createWx({ simUrl: 'http://unused', appId: 'wx1' })
    const value = { a: 1 }
    wx.setStorageSync('k', value)
    value.a = 2
    assert.deepEqual(wx.getStorageSync('k'), { a: 1 })
    assert.equal(wx.getStorageSync('missing'), '')
    wx.removeStorageSync('k')
    assert.equal(wx.getStorageSync('k'), '')
  })

  test('checkSession fails when the test says the session expired', async () => {
    const shim = createWx({ simUrl: 'http://unused', appId: 'wx1' })
    shim.state.sessionAlive = false
    const res = await settle((done) => shim.wx.checkSession({ fail: done }))
    assert.match(res.errMsg, /^checkSession:fail/)
  })
}
