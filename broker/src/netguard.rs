//! Outbound-fetch guard: which addresses an issuer's discovery and JWKS fetches may reach.
//!
//! Literal addresses are refused when the config loads (`config::check_fetch_url`);
//! names are resolved here and every non-public answer is dropped, so the check holds at
//! connect time, after DNS, and a name that resolves to a private address is refused.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True when `ip` is a globally routable unicast address (one definition, shared with
/// the issuer checks the config and the Terraform provider run).
pub use issuer_schema::is_public;

/// A resolver that only hands back public addresses.
#[derive(Debug, Default, Clone)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let iter: Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}
