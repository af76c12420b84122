// Loads the mini program's own files (app.js, the pages listed in app.json and
// whatever they `require`) into a node:vm context whose globals are what the
// WeChat runtime provides (wx, App, Page, getApp, getCurrentPages), then
// mounts pages as WeChat would: a fresh `data` copy, setData, lifecycle calls.
// Also: the environment the end-to-end tests need, and a client of the
// simulator's control API.
//
// Run directly (`node --test` does) it tests itself on a throwaway mini program.

'use strict'

const fs = require('node:fs')
const path = require('node:path')
const vm = require('node:vm')

const PROJECT_ROOT = path.resolve(__dirname, '..')

// Loads the project at `root` with the given `wx`. `config` is merged into the
// exports of the project's config.js (e.g. to point it at a test gateway).
function loadMiniProgram(wx, { root = PROJECT_ROOT, config } = {}) {
  const defs = { app: null, pages: new Map() }
  let loadingRoute = null
  const sandbox = {
    wx,
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    App(def) {
      if (defs.app) throw new Error('App() called twice')
      defs.app = def
    },
    Page(def) {
      if (!loadingRoute) throw new Error('Page() called outside a page file')
      if (defs.pages.has(loadingRoute)) throw new Error(`Page() called twice in ${loadingRoute}`)
      defs.pages.set(loadingRoute, def)
    },
    getApp() {
      return defs.app
    },
    getCurrentPages() {
      return mounted.slice()
    }
  }
  const context = vm.createContext(sandbox)
  const mounted = []
  const modules = new Map()

  function load(file) {
    if (modules.has(file)) return modules.get(file).exports
    const source = fs.readFileSync(file, 'utf8')
    const wrapper = vm.runInContext(
      `(function (require, module, exports, __filename, __dirname) {'use strict';\n${source}\n})`,
      context,
      { filename: file, lineOffset: -1 }
    )
    const module = { exports: {} }
    modules.set(file, module)
    wrapper(requireFrom(path.dirname(file)), module, module.exports, file, path.dirname(file))
    return module.exports
  }

  // Mini-program `require`: project files only (relative, or absolute from the root).
  function requireFrom(dir) {
    return function require(spec) {
      if (!spec.startsWith('.') && !spec.startsWith('/')) {
        throw new Error(`mini-program code cannot require "${spec}": only project files are available`)
      }
      const base = spec.startsWith('/') ? path.join(root, spec) : path.resolve(dir, spec)
      const candidates = [base, base + '.js', path.join(base, 'index.js')]
      const file = candidates.find((f) => f.endsWith('.js') && fs.existsSync(f) && fs.statSync(f).isFile())
      if (!file || path.relative(root, file).startsWith('..')) {
        throw new Error(`cannot find module "${spec}" from ${path.relative(root, dir) || '.'}`)
      }
      return load(file)
    }
  }

  const appJson = JSON.parse(fs.readFileSync(path.join(root, 'app.json'), 'utf8'))
  if (config) Object.assign(load(path.join(root, 'config.js')), config)
  load(path.join(root, 'app.js'))
  if (!defs.app) throw new Error('app.js did not call App()')
  for (const route of appJson.pages) {
    loadingRoute = route
    load(path.join(root, route + '.js'))
    loadingRoute = null
    if (!defs.pages.has(route)) throw new Error(`${route}.js did not call Page()`)
  }

  return {
    app: defs.app,
    pageDefinition: (route) => defs.pages.get(route),
    // Starts the app like WeChat does (onLaunch, then onShow).
    launch(options = { path: appJson.pages[0], query: {}, scene: 1001 }) {
      if (typeof defs.app.onLaunch === 'function') defs.app.onLaunch(options)
      if (typeof defs.app.onShow === 'function') defs.app.onShow(options)
    },
    // A page instance; call its lifecycle methods yourself (see `open`).
    mount(route, query = {}) {
      const def = defs.pages.get(route)
      if (!def) throw new Error(`no page ${route} in app.json`)
      const page = createPage(def, route, query)
      mounted.push(page)
      return page
    },
    // Mounts a page and runs onLoad then onShow; resolves when both settled.
    async open(route, query = {}) {
      const page = this.mount(route, query)
      const loaded = typeof page.onLoad === 'function' ? page.onLoad(query) : undefined
      const shown = typeof page.onShow === 'function' ? page.onShow() : undefined
      await Promise.all([loaded, shown])
      return page
    }
  }
}

function createPage(def, route, query) {
  const page = {}
  for (const [key, value] of Object.entries(def)) {
    if (key !== 'data') page[key] = value
  }
  // Each instance gets its own copy of the initial data, as in WeChat.
  page.data = JSON.parse(JSON.stringify(def.data || {}))
  page.route = route
  page.options = query
  page.setData = function setData(patch, callback) {
    for (const [keyPath, value] of Object.entries(patch)) {
      if (value === undefined) throw new Error(`setData: "${keyPath}" is undefined (WeChat warns and drops it)`)
      assignPath(this.data, keyPath, value)
    }
    if (typeof callback === 'function') callback.call(this)
  }
  return page
}

// setData keys: "a", "a.b", "list[2].name".
function assignPath(target, keyPath, value) {
  const parts = []
  keyPath.replace(/([^.[\]]+)|\[(\d+)\]/g, (_, name, index) => {
    parts.push(index !== undefined ? Number(index) : name)
    return ''
  })
  let node = target
  for (let i = 0; i < parts.length - 1; i++) {
    const key = parts[i]
    if (node[key] === null || typeof node[key] !== 'object') {
      node[key] = typeof parts[i + 1] === 'number' ? [] : {}
    }
    node = node[key]
  }
  node[parts[parts.length - 1]] = value
}

// What the end-to-end tests need from the environment, or a clear error.
function requireEnv(env = process.env) {
  const wanted = {
    MP_AUTH_GATEWAY_URL: 'the mp-auth HTTP gateway, e.g. http://127.0.0.1:8080',
    MP_AUTH_SIM_URL: 'the WeChat simulator (its /_sim/ control API), e.g. http://127.0.0.1:9400',
    MP_AUTH_APP_ID: 'the mini program AppID both know, e.g. wx_demo_app'
  }
  const missing = Object.keys(wanted).filter((name) => !env[name])
  if (missing.length > 0) {
    throw new Error(
      'The mini-program login test talks to a running gateway and WeChat simulator, ' +
        'but these environment variables are not set:\n' +
        missing.map((name) => `  ${name}: ${wanted[name]}`).join('\n') +
        '\nStart them with `cargo run -- dev`, then run:\n' +
        '  MP_AUTH_GATEWAY_URL=http://127.0.0.1:8080 MP_AUTH_SIM_URL=http://127.0.0.1:9400 ' +
        'MP_AUTH_APP_ID=wx_demo_app node --test examples/miniprogram/test/'
    )
  }
  return {
    gatewayUrl: env.MP_AUTH_GATEWAY_URL.replace(/\/+$/, ''),
    simUrl: env.MP_AUTH_SIM_URL.replace(/\/+$/, ''),
    appId: env.MP_AUTH_APP_ID
  }
}

// The simulator's control API (it plays the WeChat client and injects faults).
function simClient(simUrl, appId) {
  async function send(method, p, body) {
    const res = await fetch(simUrl + p, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`simulator ${method} ${p} answered ${res.status}: ${text}`)
    return text ? JSON.parse(text) : null
  }
  return {
    login: (user, phone) => send('POST', '/_sim/login', phone ? { app_id: appId, user, phone } : { app_id: appId, user }),
    // What the phone button returns: {code, encryptedData, iv}.
    phone: (user) => send('POST', '/_sim/phone', { app_id: appId, user }),
    fault: (fault) => send('POST', '/_sim/faults', fault),
    clearFaults: () => send('DELETE', '/_sim/faults'),
    stats: () => send('GET', '/_sim/stats')
  }
}

// The payload of a JWT (not verified: the gateway's tests do that).
function jwtPayload(token) {
  const parts = String(token).split('.')
  if (parts.length !== 3) throw new Error('not a JWT')
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
}

// A TCP port nothing listens on (bound, then released).
function closedPort() {
  const net = require('node:net')
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// A stand-in for your own API: `GET /me` answers 200 {sub, sid} for a valid
// access token and 401 otherwise. It verifies the ES256 signature against the
// gateway's /.well-known/jwks.json, and `exp`, as a real backend would (no call
// to mp-auth per request). Resolves {url, calls, close()}.
async function startApi(gatewayUrl) {
  const http = require('node:http')
  const crypto = require('node:crypto')
  const jwks = await (await fetch(gatewayUrl + '/.well-known/jwks.json')).json()
  const keys = new Map(jwks.keys.map((k) => [k.kid, crypto.createPublicKey({ key: k, format: 'jwk' })]))
  const calls = []
  function verify(token) {
    const parts = String(token).split('.')
    if (parts.length !== 3) return null
    let header
    let claims
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'))
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
    } catch {
      return null
    }
    const key = keys.get(header.kid)
    if (!key || header.alg !== 'ES256') return null
    const ok = crypto.verify(
      'sha256',
      Buffer.from(parts[0] + '.' + parts[1]),
      { key, dsaEncoding: 'ieee-p1363' },
      Buffer.from(parts[2], 'base64url')
    )
    if (!ok || !(claims.exp * 1000 > Date.now())) return null
    return claims
  }
  const server = http.createServer((req, res) => {
    const auth = String(req.headers.authorization || '')
    const claims = auth.startsWith('Bearer ') ? verify(auth.slice(7)) : null
    calls.push({ url: req.url, status: claims ? 200 : 401 })
    res.setHeader('content-type', 'application/json')
    if (req.url !== '/me') {
      res.statusCode = 404
      res.end('{}')
    } else if (!claims) {
      res.statusCode = 401
      res.end(JSON.stringify({ reason: 'TOKEN_INVALID' }))
    } else {
      res.end(JSON.stringify({ sub: claims.sub, sid: claims.sid }))
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    calls,
    close: () => new Promise((resolve) => server.close(resolve))
  }
}

module.exports = {
  PROJECT_ROOT,
  loadMiniProgram,
  requireEnv,
  simClient,
  jwtPayload,
  closedPort,
  startApi
}

if (require.main === module) {
  selfTest()
}

function selfTest() {
  const { test } = require('node:test')
  const assert = require('node:assert/strict')
  const os = require('node:os')

  function project(files) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-harness-'))
    for (const [name, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true })
      fs.writeFileSync(path.join(root, name), text)
    }
    return root
  }

  test('pages get their own data and setData understands key paths', async () => {
    const root = project({
      'app.json': '{"pages":["pages/a/a"]}',
      'config.js': 'module.exports = { base: "x" }',
      'app.js': 'App({ globalData: { n: 0 } })',
      'utils/u.js': 'module.exports = { twice: (n) => n * 2 }',
      'pages/a/a.js': `const u = require('../../utils/u'); const c = require('/config')
        Page({ data: { list: [{ name: 'a' }], n: 1 },
          onLoad(q) { this.setData({ 'list[0].name': q.name, 'obj.deep': u.twice(this.data.n), base: c.base }) } })`
    })
    const mp = loadMiniProgram({}, { root, config: { base: 'patched' } })
    const one = await mp.open('pages/a/a', { name: 'b' })
    const two = mp.mount('pages/a/a')
    assert.equal(one.data.list[0].name, 'b')
    assert.equal(one.data.obj.deep, 2)
    assert.equal(one.data.base, 'patched')
    assert.equal(two.data.list[0].name, 'a')
  })

  test('mini-program code cannot require Node modules', () => {
    const root = project({
      'app.json': '{"pages":["p"]}',
      'config.js': 'module.exports = {}',
      'app.js': 'App({})',
      'p.js': "require('fs'); Page({})"
    })
    assert.throws(() => loadMiniProgram({}, { root }), /cannot require "fs"/)
  })

  test('a page file that does not call Page() is reported', () => {
    const root = project({
      'app.json': '{"pages":["p"]}',
      'config.js': 'module.exports = {}',
      'app.js': 'App({})',
      'p.js': 'module.exports = {}'
    })
    assert.throws(() => loadMiniProgram({}, { root }), /p\.js did not call Page\(\)/)
  })

  test('missing environment variables are named with how to set them', () => {
    assert.throws(
      () => requireEnv({ MP_AUTH_APP_ID: 'wx1' }),
      (err) =>
        /MP_AUTH_GATEWAY_URL/.test(err.message) &&
        /MP_AUTH_SIM_URL/.test(err.message) &&
        !/ {2}MP_AUTH_APP_ID:/.test(err.message) &&
        /dev/.test(err.message)
    )
  })

  test('jwtPayload decodes the claims of a token', () => {
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
    assert.deepEqual(jwtPayload(`${enc({ alg: 'HS256' })}.${enc({ sub: '42' })}.sig`), { sub: '42' })
  })
}
