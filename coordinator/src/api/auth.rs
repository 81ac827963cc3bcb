//! Who is calling: volunteers (token), scientists and operators (API keys), the caller's
//! network prefix; secrets are stored hashed.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use protocol::Digest;
use rand::Rng;

use super::*;

/// SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Digest::of(secret.as_bytes()).0.to_vec()
}

/// A fresh secret: `prefix` + 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>` header",
            )
        })
}

/// An authenticated volunteer.
pub struct Volunteer(pub i64);

impl FromRequestParts<Shared> for Volunteer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let hash = hash_secret(bearer(&parts.headers)?);
        let store = state.store.clone();
        let v = blocking(move || store.volunteer_by_token(&hash, now()))
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown volunteer token"))?;
        if v.blacklisted {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this volunteer is blocked after failed spot-checks",
            ));
        }
        Ok(Volunteer(v.id))
    }
}

/// The caller's network prefix (/24 for IPv4, /48 for IPv6), when the server knows the peer
/// address: replicas of a unit whose policy says `distinct_prefixes` go to distinct ones.
pub struct Prefix(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Prefix {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Prefix(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::conn::PeerAddr>>()
                .map(|c| c.0.0)
                .or_else(|| {
                    parts
                        .extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0)
                })
                .map(|a| network_prefix(a.ip())),
        ))
    }
}

/// `a.b.c.0/24` for IPv4 (and IPv4-mapped IPv6), the first 48 bits for IPv6.
pub fn network_prefix(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// An operator: an API key created with `--operator`, from the `Authorization` header only (a
/// key never travels in a URL, where logs and histories keep it). It holds the key's id: a
/// verifier worker's leases are bound to it.
pub struct Operator(pub i64);

/// Short-lived tickets for the dashboard's event stream: EventSource cannot send headers, so
/// an operator trades its key (in a header) for a ticket that opens the stream for a minute.
/// Stored hashed, in memory.
#[derive(Default)]
pub struct Tickets(std::sync::Mutex<std::collections::HashMap<Vec<u8>, i64>>);

/// How long a stream ticket is good for: it opens one stream, which ends when the ticket
/// would have expired (the page then buys a new one).
pub const TICKET_S: i64 = 60;

impl Tickets {
    /// A new ticket, valid until `now + TICKET_S`.
    pub fn issue(&self, now: i64) -> String {
        let ticket = new_secret("qgt_");
        let mut m = crate::lock(&self.0);
        m.retain(|_, until| *until > now);
        m.insert(hash_secret(&ticket), now + TICKET_S);
        ticket
    }
    /// Opens a stream with `ticket`, once: the ticket is used up; its expiry, when it was
    /// valid.
    pub fn open(&self, ticket: &str, now: i64) -> Option<i64> {
        let mut m = crate::lock(&self.0);
        m.remove(&hash_secret(ticket)).filter(|until| *until > now)
    }
}

/// The dashboard's stream: an operator key in the header, or a ticket (`?ticket=`) from
/// `POST /api/v1/dashboard/ticket`, which opens one stream until it expires (`until`).
pub struct StreamViewer {
    pub until: Option<i64>,
}

impl FromRequestParts<Shared> for StreamViewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        if bearer(&parts.headers).is_ok() {
            return Operator::from_request_parts(parts, state)
                .await
                .map(|_| StreamViewer { until: None });
        }
        let ticket = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("ticket="))
                .map(str::to_owned)
        });
        match ticket.map(|t| state.tickets.open(&t, super::now())) {
            Some(Some(until)) => Ok(StreamViewer { until: Some(until) }),
            Some(None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the stream ticket is unknown, used or expired: get a new one (POST /api/v1/dashboard/ticket)",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an operator key (Authorization: Bearer) or a stream ticket (?ticket=) is needed",
            )),
        }
    }
}

impl FromRequestParts<Shared> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers)?.to_owned();
        let hash = hash_secret(&key);
        let store = state.store.clone();
        match blocking(move || store.key_by_hash(&hash)).await? {
            Some(k) if k.operator => Ok(Operator(k.id)),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "an operator key is needed",
            )),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key")),
        }
    }
}

/// An authenticated scientist (API key); `viewer()` is None for operators, who see all.
pub struct Scientist(pub crate::store::KeyAuth);

impl Scientist {
    pub fn viewer(&self) -> Option<i64> {
        (!self.0.operator).then_some(self.0.id)
    }
}

impl FromRequestParts<Shared> for Scientist {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let hash = hash_secret(bearer(&parts.headers)?);
        let store = state.store.clone();
        blocking(move || store.key_by_hash(&hash))
            .await?
            .map(Scientist)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown API key"))
    }
}

/// A rate per key (a network prefix for registrations, an API key for batch submissions), as a
/// token bucket: `per_minute` on average, up to `3 × per_minute` at once; 0 leaves it
/// unlimited. Anyone may register, but not a thousand tokens a second from one network.
pub struct RateLimit {
    per_minute: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, f64)>>,
}

impl RateLimit {
    pub fn new(per_minute: f64) -> Self {
        Self {
            per_minute: per_minute.max(0.0),
            buckets: Default::default(),
        }
    }

    fn burst(&self) -> f64 {
        (3.0 * self.per_minute).max(1.0)
    }

    /// Takes one for `prefix` (the key) at time `t` (seconds); Err(seconds to wait).
    pub fn take(&self, prefix: &str, t: f64) -> Result<(), u64> {
        if self.per_minute == 0.0 {
            return Ok(());
        }
        let rate = self.per_minute / 60.0;
        let burst = self.burst();
        let mut m = crate::lock(&self.buckets);
        if m.len() > 100_000 {
            // Forget prefixes whose bucket has refilled: they are as good as new.
            m.retain(|_, (tokens, at)| *tokens + (t - *at) * rate < burst);
        }
        let (tokens, at) = m.entry(prefix.to_owned()).or_insert((burst, t));
        *tokens = (*tokens + (t - *at).max(0.0) * rate).min(burst);
        *at = t;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Takes one for `key` now; None, or the 429 answer (with `Retry-After`) saying what was
    /// limited.
    pub fn refusal(&self, key: &str, what: &str) -> Option<Response> {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.take(key, t).err().map(|wait| {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{what}; try again in {wait} s"),
            )
            .into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_limited_per_prefix_and_refill() {
        let l = RateLimit::new(10.0);
        for _ in 0..30 {
            assert_eq!(l.take("10.0.0.0/24", 0.0), Ok(()));
        }
        // The burst is spent: one more in 6 s (10 a minute).
        assert_eq!(l.take("10.0.0.0/24", 0.0), Err(6));
        assert_eq!(
            l.take("10.0.1.0/24", 0.0),
            Ok(()),
            "another network is not affected"
        );
        assert_eq!(l.take("10.0.0.0/24", 6.0), Ok(()));
        assert!(l.take("10.0.0.0/24", 6.5).is_err());
        let open = RateLimit::new(0.0);
        for _ in 0..1000 {
            assert_eq!(open.take("x", 0.0), Ok(()));
        }
    }
}
