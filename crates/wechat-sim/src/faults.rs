//! Injected faults: latency, HTTP errors, garbage bodies and errcodes that the
//! WeChat endpoints serve instead of (or before) their normal answer, so tests
//! and benchmarks can exercise the service's failure handling.

use crate::sync::lock;
use serde::{Deserialize, Serialize};
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

/// The WeChat endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultEndpoint {
    /// `GET /sns/jscode2session`.
    #[serde(rename = "jscode2session")]
    Jscode2Session,
    /// `POST /cgi-bin/stable_token`.
    #[serde(rename = "stable_token")]
    StableToken,
    /// `POST /wxa/business/getuserphonenumber`.
    #[serde(rename = "getuserphonenumber")]
    GetUserPhoneNumber,
    /// Every WeChat endpoint.
    #[serde(rename = "*")]
    Any,
}

impl FaultEndpoint {
    /// The wire name, also the key in [`crate::SimStats::calls`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jscode2Session => "jscode2session",
            Self::StableToken => "stable_token",
            Self::GetUserPhoneNumber => "getuserphonenumber",
            Self::Any => "*",
        }
    }

    fn matches(self, endpoint: FaultEndpoint) -> bool {
        self == Self::Any || self == endpoint
    }
}

/// One fault to inject (`POST /_sim/faults`). A call takes the first matching
/// fault still armed. What it does, in order: sleep `latency_ms`; then answer
/// with `body` (raw text) if set, else with `errcode` (WeChat's errmsg for it)
/// if set, else with an empty-ish error page if `http_status` is set; a
/// latency-only fault then lets the call proceed normally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Which endpoint the fault applies to.
    pub endpoint: FaultEndpoint,
    /// How many matching calls it affects. `None`: 1, except for a fault with
    /// `latency_ms`, which then lasts until `DELETE /_sim/faults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Delay before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// HTTP status of the answer (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Raw response body, e.g. non-JSON garbage or truncated JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A WeChat errcode to answer with (`errmsg` is WeChat's real one for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
}

impl Fault {
    /// A fault on `endpoint` that does nothing yet; set the fields you need.
    pub fn on(endpoint: FaultEndpoint) -> Self {
        Self {
            endpoint,
            count: None,
            latency_ms: None,
            http_status: None,
            body: None,
            errcode: None,
        }
    }

    /// Checks the fault makes sense; the message is for the control API's caller.
    pub fn validate(&self) -> Result<(), String> {
        if self.count == Some(0) {
            return Err("count must be at least 1 (omit it for the default)".into());
        }
        if let Some(status) = self.http_status
            && !(100..=599).contains(&status)
        {
            return Err(format!("http_status {status} is not an HTTP status"));
        }
        if self.latency_ms.is_none()
            && self.http_status.is_none()
            && self.body.is_none()
            && self.errcode.is_none()
        {
            return Err("a fault needs latency_ms, http_status, body or errcode".into());
        }
        Ok(())
    }

    /// True when the fault replaces the answer (rather than only delaying it).
    pub fn replaces_answer(&self) -> bool {
        self.http_status.is_some() || self.body.is_some() || self.errcode.is_some()
    }

    /// True when WeChat would have processed the request before the answer went
    /// wrong (a garbled 2xx body): the call then consumes its code as normal.
    /// Errcodes and non-2xx statuses mean WeChat did not process it.
    pub fn processes_request(&self) -> bool {
        self.body.is_some() && self.http_status.is_none_or(|s| (200..300).contains(&s))
    }
}

struct Armed {
    fault: Fault,
    /// `None`: until cleared.
    remaining: Option<u64>,
}

/// The armed faults. Calls take the fast path (one atomic load) when none is armed.
#[derive(Default)]
pub(crate) struct FaultSet {
    armed_count: AtomicUsize,
    armed: Mutex<Vec<Armed>>,
}

impl FaultSet {
    pub fn add(&self, fault: Fault) {
        let remaining = match (fault.count, fault.latency_ms) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        };
        let mut armed = lock(&self.armed);
        armed.push(Armed { fault, remaining });
        self.armed_count.store(armed.len(), Ordering::Release);
    }

    pub fn clear(&self) {
        let mut armed = lock(&self.armed);
        armed.clear();
        self.armed_count.store(0, Ordering::Release);
    }

    /// Takes (consumes one use of) the first armed fault matching `endpoint`.
    pub fn take(&self, endpoint: FaultEndpoint) -> Option<Fault> {
        if self.armed_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut armed = lock(&self.armed);
        let i = armed
            .iter()
            .position(|a| a.fault.endpoint.matches(endpoint))?;
        let fault = armed[i].fault.clone();
        if let Some(n) = armed[i].remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                armed.remove(i);
            }
        }
        self.armed_count.store(armed.len(), Ordering::Release);
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_documented_json() {
        let f: Fault = serde_json::from_str(
            r#"{"endpoint":"stable_token","count":2,"errcode":-1,"http_status":200}"#,
        )
        .unwrap();
        assert_eq!(f.endpoint, FaultEndpoint::StableToken);
        assert_eq!(f.count, Some(2));
        assert_eq!(f.errcode, Some(-1));
        let any: Fault = serde_json::from_str(r#"{"endpoint":"*","latency_ms":5}"#).unwrap();
        assert_eq!(any.endpoint, FaultEndpoint::Any);
        assert!(serde_json::from_str::<Fault>(r#"{"endpoint":"nope","errcode":1}"#).is_err());
    }

    #[test]
    fn a_fault_is_consumed_once_per_matching_call() {
        let set = FaultSet::default();
        let mut f = Fault::on(FaultEndpoint::Jscode2Session);
        f.errcode = Some(-1);
        f.count = Some(2);
        set.add(f);
        assert!(set.take(FaultEndpoint::StableToken).is_none());
        assert!(set.take(FaultEndpoint::Jscode2Session).is_some());
        assert!(set.take(FaultEndpoint::Jscode2Session).is_some());
        assert!(set.take(FaultEndpoint::Jscode2Session).is_none());
    }

    #[test]
    fn a_latency_fault_without_count_lasts_until_cleared() {
        let set = FaultSet::default();
        let mut f = Fault::on(FaultEndpoint::Any);
        f.latency_ms = Some(1);
        set.add(f);
        for _ in 0..10 {
            assert!(set.take(FaultEndpoint::GetUserPhoneNumber).is_some());
        }
        set.clear();
        assert!(set.take(FaultEndpoint::GetUserPhoneNumber).is_none());
    }

    #[test]
    fn useless_faults_are_refused() {
        assert!(Fault::on(FaultEndpoint::Any).validate().is_err());
        let mut f = Fault::on(FaultEndpoint::Any);
        f.errcode = Some(40029);
        f.count = Some(0);
        assert!(f.validate().is_err());
        f.count = None;
        f.http_status = Some(1000);
        assert!(f.validate().is_err());
    }

    #[test]
    fn only_garbled_success_bodies_count_as_processed() {
        let mut f = Fault::on(FaultEndpoint::Jscode2Session);
        f.body = Some("{\"session_k".into());
        assert!(f.processes_request());
        f.http_status = Some(502);
        assert!(!f.processes_request());
        let mut e = Fault::on(FaultEndpoint::Jscode2Session);
        e.errcode = Some(-1);
        assert!(!e.processes_request());
    }
}
