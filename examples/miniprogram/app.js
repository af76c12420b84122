// The mp-auth sample mini program. The login page does the work; the app only
// keeps the current login (from storage) where other pages can read it.
const auth = require('./utils/auth')

App({
  globalData: {
    // {access_token, expires_at, refresh_token, refresh_expires_at, user_id, openid}
    // after a login, else null.
    auth: null
  },

  onLaunch() {
    this.globalData.auth = auth.loadToken()
  }
})
