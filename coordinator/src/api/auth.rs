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
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| network_prefix(c.0.ip())),
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

/// An operator: an API key created with `--operator`, from the `Authorization` header or, for
/// EventSource (which cannot set headers), a `?key=` query parameter.
pub struct Operator;

impl FromRequestParts<Shared> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("key="))
                .map(str::to_owned)
        });
        let key = match bearer(&parts.headers) {
            Ok(k) => k.to_owned(),
            Err(e) => from_query.ok_or(e)?,
        };
        let hash = hash_secret(&key);
        let store = state.store.clone();
        match blocking(move || store.key_by_hash(&hash)).await? {
            Some(k) if k.operator => Ok(Operator),
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
