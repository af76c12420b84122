//! Who the client is: the TCP peer, unless the peer is a trusted proxy, in
//! which case the right-most address of `X-Forwarded-For` that is not itself a
//! trusted proxy. A forged `X-Forwarded-For` from an untrusted peer is ignored.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The header proxies append the address they received a request from to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The resolved client address of a request (a request extension set by the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A `trusted_proxies` entry that is neither an IP nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error(
    "gateway.trusted_proxies: {entry:?} is neither an IP address nor a CIDR. Fix: use e.g. \"10.0.0.0/8\" or \"192.168.1.7\""
)]
pub struct TrustedProxiesError {
    /// The offending entry.
    pub entry: String,
}

/// The peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses exact IPs (`10.0.0.7`, `::1`) and CIDRs (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(entries: &[String]) -> Result<Self, TrustedProxiesError> {
        entries
            .iter()
            .map(|entry| {
                let text = entry.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| TrustedProxiesError {
                        entry: entry.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request received from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        // Hops in the order proxies appended them, over all header lines.
        let mut hops: Vec<Option<IpAddr>> = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            match value.to_str() {
                Ok(text) => hops.extend(text.split(',').map(parse_hop)),
                Err(_) => hops.push(None),
            }
        }
        // Walk from the right: every trusted hop vouches for the one to its left.
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.is_trusted(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage was not written by a trusted proxy: stop at the last vouched hop.
                None => return client,
            }
        }
        client
    }
}

/// Requests looked at before deciding whether the gateway sits behind a proxy
/// it does not trust.
const PROXY_WATCH_WINDOW: u32 = 50;

/// Notices the misconfiguration that puts every user in one rate-limit
/// bucket: all of the first requests come from one untrusted peer that sends
/// `X-Forwarded-For` (an ingress or load balancer missing from
/// `trusted_proxies`). Decides once, then costs one atomic load per request.
#[derive(Debug, Default)]
pub struct UntrustedProxyWatch {
    decided: std::sync::atomic::AtomicBool,
    state: parking_lot::Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    peer: Option<IpAddr>,
    seen: u32,
    forwarded: bool,
}

impl UntrustedProxyWatch {
    /// Records one request from `peer`; returns the peer once, when the
    /// window is complete and every request came from it, untrusted, with
    /// `X-Forwarded-For` on at least one.
    pub fn observe(&self, peer: IpAddr, trusted: bool, has_xff: bool) -> Option<IpAddr> {
        use std::sync::atomic::Ordering;
        if self.decided.load(Ordering::Relaxed) {
            return None;
        }
        let mut st = self.state.lock();
        let peer = peer.to_canonical();
        if trusted || st.peer.is_some_and(|p| p != peer) {
            self.decided.store(true, Ordering::Relaxed);
            return None;
        }
        st.peer = Some(peer);
        st.seen += 1;
        st.forwarded |= has_xff;
        if st.seen < PROXY_WATCH_WINDOW {
            return None;
        }
        self.decided.store(true, Ordering::Relaxed);
        st.forwarded.then_some(peer)
    }
}

/// One `X-Forwarded-For` element: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.client_ip(ip("203.0.113.9"), &xff(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), &xff(&["1.1.1.1"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_yields_the_right_most_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7"]);
        let headers = xff(&["6.6.6.6, 198.51.100.4, 10.1.1.1"]);
        assert_eq!(p.client_ip(ip("192.168.1.7"), &headers), ip("198.51.100.4"));
        // Spread over several header lines, same answer.
        let headers = xff(&["6.6.6.6", "198.51.100.4", "10.1.1.1"]);
        assert_eq!(p.client_ip(ip("10.9.9.9"), &headers), ip("198.51.100.4"));
    }

    #[test]
    fn a_client_cannot_spoof_through_a_trusted_proxy_by_prepending() {
        let p = proxies(&["10.0.0.1"]);
        // The client sent "XFF: 1.2.3.4"; the proxy appended the real peer.
        let headers = xff(&["1.2.3.4, 203.0.113.50"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &headers), ip("203.0.113.50"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let p = proxies(&["10.0.0.1"]);
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["10.0.0.5, 10.0.0.6"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.5"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_vouched_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["1.1.1.1, not-an-ip, 10.0.0.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.9"));
    }

    #[test]
    fn hops_with_ports_and_ipv6_forms_are_understood() {
        let p = proxies(&["fd00::/8", "10.0.0.1"]);
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &xff(&["198.51.100.4:5555"])),
            ip("198.51.100.4")
        );
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            p.client_ip(ip("fd00::1"), &xff(&["[2001:db8::2]"])),
            ip("2001:db8::2")
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let p = proxies(&["10.0.0.1"]);
        assert!(p.is_trusted(ip("::ffff:10.0.0.1")));
        assert_eq!(
            p.client_ip(ip("::ffff:10.0.0.1"), &xff(&["203.0.113.1"])),
            ip("203.0.113.1")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("::ffff:203.0.113.2"), &HeaderMap::new()),
            ip("203.0.113.2")
        );
    }

    #[test]
    fn one_untrusted_forwarding_peer_for_the_whole_window_is_reported_once() {
        let w = UntrustedProxyWatch::default();
        let proxy = ip("10.1.2.3");
        let reports: Vec<_> = (0..200)
            .filter_map(|_| w.observe(proxy, false, true))
            .collect();
        assert_eq!(reports, vec![proxy]);
    }

    #[test]
    fn several_peers_trusted_peers_or_no_forwarding_are_not_reported() {
        let w = UntrustedProxyWatch::default();
        assert!((0..100).all(|i| {
            w.observe(
                if i == 7 {
                    ip("10.0.0.2")
                } else {
                    ip("10.0.0.1")
                },
                false,
                true,
            )
            .is_none()
        }));
        let w = UntrustedProxyWatch::default();
        assert!((0..100).all(|_| w.observe(ip("10.0.0.1"), true, true).is_none()));
        let w = UntrustedProxyWatch::default();
        assert!((0..100).all(|_| w.observe(ip("203.0.113.9"), false, false).is_none()));
    }

    #[test]
    fn bad_entries_are_refused_with_a_fix() {
        let err = TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"));
        assert!(err.to_string().contains("Fix"));
        assert!(TrustedProxies::parse(&["proxy.local".to_owned()]).is_err());
    }
}
