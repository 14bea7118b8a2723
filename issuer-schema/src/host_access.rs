//! An issuer made through the admin API (or Terraform) may not reach into the broker's
//! host or network unless the configuration file opts in.

use crate::checks::{IssuerError, Problem};
use crate::raw::RawIssuer;

/// The configuration file's opt-ins (`admin.allow_insecure_issuers`,
/// `admin.allow_file_paths`), both off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostAccess {
    pub allow_insecure_issuers: bool,
    pub allow_file_paths: bool,
}

/// `danger_allow_insecure` (http://, loopback and private addresses) needs
/// `allow_insecure_issuers`; `jwks_file` and `tls_ca_file` need `allow_file_paths`. A
/// refused field is removed from `raw`, so that the caller never opens its file.
pub fn refuse_host_access(raw: &mut RawIssuer, access: HostAccess) -> Vec<Problem> {
    let mut problems = Vec::new();
    if raw.danger_allow_insecure && !access.allow_insecure_issuers {
        problems.push(Problem {
            field: "danger_allow_insecure",
            error: IssuerError::InsecureNotAllowed,
        });
        raw.danger_allow_insecure = false;
    }
    if access.allow_file_paths {
        return problems;
    }
    for (field, present) in [
        ("jwks_file", raw.jwks_file.take().is_some()),
        ("tls_ca_file", raw.tls_ca_file.take().is_some()),
    ] {
        if present {
            problems.push(Problem {
                field,
                error: IssuerError::FilePathNotAllowed,
            });
        }
    }
    problems
}
