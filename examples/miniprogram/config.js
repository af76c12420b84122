// Where the sample talks to mp-auth. Change `gatewayBaseUrl` to your gateway
// (`mp-auth dev` serves it on http://127.0.0.1:8080). A real device cannot reach
// 127.0.0.1 of your computer: use your computer's LAN address there, and in
// production an HTTPS domain listed in the mini program's "request 合法域名".
module.exports = {
  gatewayBaseUrl: 'http://127.0.0.1:8080',

  // The AppID sent to the gateway as `appId` (it needs one when it serves
  // several mini programs). `null`: this mini program's own AppID, read with
  // wx.getAccountInfoSync(). `''`: send none (a gateway serving one app).
  appId: null,

  // wx.request timeout for the gateway calls, in milliseconds.
  requestTimeoutMs: 15000,

  // Your own API, called with `Authorization: Bearer <access_token>` (the
  // "调用接口" button calls GET {apiBaseUrl}/me). It verifies tokens with the
  // gateway's /.well-known/jwks.json; on a 401 the page refreshes once and retries.
  apiBaseUrl: 'http://127.0.0.1:8081'
}
