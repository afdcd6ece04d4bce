//! The client address that abuse limits are keyed on.
//!
//! By default it is the TCP peer: a client cannot choose it. Behind a proxy every request
//! comes from the proxy, so deployments where a proxy that appends `X-Forwarded-For` is the
//! only way in set `http.trust_forwarded_for`, and the *last* entry of that header (the one
//! the proxy added) is used; earlier entries are whatever the client sent and are ignored.

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpRequest};

use crate::error::ApiError;

/// Whether `X-Forwarded-For` is believed; registered as app data at start.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpPolicy {
    pub trust_forwarded_for: bool,
}

/// The address of the client making the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trust = request
            .app_data::<ClientIpPolicy>()
            .is_some_and(|policy| policy.trust_forwarded_for);
        let forwarded = trust
            .then(|| last_forwarded_for(request.headers()))
            .flatten();
        let peer = request.peer_addr().map(|address| address.ip());
        ready(
            forwarded
                .or(peer)
                .map(ClientIp)
                .ok_or_else(|| anyhow::anyhow!("the request has no peer address").into()),
        )
    }
}

/// The last address of all `X-Forwarded-For` values, if it is one.
fn last_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    #[test]
    fn the_entry_the_proxy_appended_wins_over_what_the_client_sent() {
        let client_sent = headers(&["1.1.1.1, 2.2.2.2", "203.0.113.9"]);
        assert_eq!(
            last_forwarded_for(&client_sent),
            Some("203.0.113.9".parse().expect("ip"))
        );
        assert_eq!(
            last_forwarded_for(&headers(&["1.1.1.1, 2001:db8::1 "])),
            Some("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(last_forwarded_for(&headers(&["1.1.1.1, unknown"])), None);
        assert_eq!(last_forwarded_for(&headers(&[])), None);
    }
}
