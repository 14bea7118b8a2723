//! The checks an issuer's text alone decides, one named step each, with one error
//! variant per reason. The broker's configuration runs these steps (adding its file
//! reads and its cross-issuer checks between them); [`check`] runs them all in the same
//! order for callers without files, such as the Terraform provider at plan time.

use issuers::{Algorithm, IssuerKind, JwksError, KeySet, KindConfigError, KindParams, UnsupportedAlgorithm};
use url::Url;

use crate::DEFAULT_MAX_TOKEN_LIFETIME;
use crate::address::is_public;
use crate::raw::RawIssuer;

/// Why an issuer is refused. The texts are the broker's configuration messages (the
/// contract pins them): the field is reported beside them, never inside.
#[non_exhaustive]
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum IssuerError {
    #[error("{0}")]
    UnknownKind(KindConfigError),
    #[error("required for kind {0}")]
    IssuerRequired(IssuerKind),
    /// The kind's own rules for its parameters and issuer URL.
    #[error("{0}")]
    KindConfig(KindConfigError),
    #[error("must not be empty")]
    EmptyName,
    #[error("not a URL: {0}")]
    NotAUrl(url::ParseError),
    #[error("must be https:// (set danger_allow_insecure: true for development)")]
    NotHttps,
    #[error("unsupported scheme `{0}`")]
    UnsupportedScheme(String),
    #[error("must not have a query, fragment or credentials")]
    QueryFragmentOrCredentials,
    #[error("must name a host")]
    NoHost,
    #[error(
        "names a loopback, private or link-local address (set danger_allow_insecure: true for development)"
    )]
    NonPublicHost,
    #[error("required: a non-empty list of accepted `aud` values")]
    NoAudiences,
    /// `extra_claims`: the offending name (escaped), or `None` when there are too many.
    #[error("{}", match .0 {
        Some(name) => format!("`{}` is not a top-level claim name (1 to {MAX_CLAIM_NAME_CHARS} characters, no `.`)", name.escape_debug()),
        None => format!("at most {MAX_EXTRA_CLAIMS} names"),
    })]
    BadExtraClaim(Option<String>),
    #[error("give at most one of jwks_uri, jwks and jwks_file")]
    SeveralKeySources,
    #[error("no usable key in this key set")]
    EmptyKeySet,
    #[error("invalid key set: {0}")]
    InvalidKeySet(JwksError),
    #[error("{0}")]
    UnknownAlgorithm(UnsupportedAlgorithm),
    #[error("must list at least one algorithm")]
    NoAlgorithms,
    #[error("unknown value `{0}`; expected one_time or reusable")]
    UnknownReplay(String),
    /// `federation_rules::parse_duration`'s message, which names the input.
    #[error("{0}")]
    Duration(String),
    #[error("not used by kind aws-iam (it checks signed AWS requests, not tokens): remove it")]
    NotForAwsIam,
    #[error("for kind aws-iam, a name such as aws-iam:prod, not a URL")]
    AwsIamIssuerIsUrl,
    #[error("required for kind aws-iam: a non-empty list of 12-digit AWS account IDs")]
    NoAccounts,
    #[error("`{0}` is not a 12-digit AWS account ID")]
    BadAccount(String),
    #[error("required for kind aws-iam: a non-empty value of printable ASCII, at most 256 characters")]
    BadServerId,
    #[error("required for kind aws-iam: a non-empty list of STS endpoint URLs")]
    NoStsEndpoints,
    #[error(
        "refused in an issuer made through the admin API (it allows http:// and loopback or private \
         addresses); to allow it, set `admin.allow_insecure_issuers: true` in the configuration file"
    )]
    InsecureNotAllowed,
    #[error(
        "refused in an issuer made through the admin API (it names a file on the broker's host); \
         give the keys inline with `jwks` or fetch them with `jwks_uri`, or set \
         `admin.allow_file_paths: true` in the configuration file"
    )]
    FilePathNotAllowed,
}

/// One problem: the issuer field it concerns (the YAML name) and why.
#[derive(Debug, PartialEq)]
pub struct Problem {
    pub field: &'static str,
    pub error: IssuerError,
}

/// Whether a token from this issuer may be exchanged once (`one_time`, the default) or
/// again until it expires (`reusable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMode {
    OneTime,
    Reusable,
}

/// `kind`: generic when left out.
pub fn kind(raw: &RawIssuer) -> Result<IssuerKind, IssuerError> {
    match raw.kind.as_deref() {
        None => Ok(IssuerKind::Generic),
        Some(text) => text.parse().map_err(IssuerError::UnknownKind),
    }
}

/// `tenant`, `entra_version`, `trust_domain`: what some kinds need.
pub fn kind_params(raw: &RawIssuer) -> KindParams {
    KindParams {
        tenant: raw.tenant.clone(),
        entra_version: raw.entra_version.clone(),
        trust_domain: raw.trust_domain.clone(),
        accounts: raw.accounts.clone(),
        server_id: raw.server_id.clone(),
        sts_endpoints: raw.sts_endpoints.clone(),
    }
}

/// The `iss` text: as written, or the kind's default when left out.
pub fn issuer_url(raw: &RawIssuer, kind: IssuerKind, params: &KindParams) -> Result<String, IssuerError> {
    if !raw.issuer.is_empty() {
        return Ok(raw.issuer.clone());
    }
    match kind.default_issuer(params) {
        Ok(Some(default)) => Ok(default),
        Ok(None) => Err(IssuerError::IssuerRequired(kind)),
        Err(e) => Err(IssuerError::KindConfig(e)),
    }
}

/// The kind's rules for its issuer URL and parameters (nothing to check without a URL).
pub fn kind_config(kind: IssuerKind, issuer: &str, params: &KindParams) -> Result<(), IssuerError> {
    if issuer.is_empty() {
        return Ok(());
    }
    kind.check_config(issuer, params).map_err(IssuerError::KindConfig)
}

/// `name`: rules refer to it.
pub fn name(raw: &RawIssuer) -> Result<(), IssuerError> {
    if raw.name.is_empty() {
        Err(IssuerError::EmptyName)
    } else {
        Ok(())
    }
}

/// An issuer or JWKS URL must be https and must not name a loopback, private or
/// link-local address (or `localhost`) unless `danger_allow_insecure`.
pub fn check_fetch_url(text: &str, danger_allow_insecure: bool) -> Result<Url, IssuerError> {
    let url = Url::parse(text).map_err(IssuerError::NotAUrl)?;
    match url.scheme() {
        "https" => {}
        "http" if danger_allow_insecure => {}
        "http" => return Err(IssuerError::NotHttps),
        other => return Err(IssuerError::UnsupportedScheme(other.to_string())),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(IssuerError::QueryFragmentOrCredentials);
    }
    let Some(host) = url.host() else {
        return Err(IssuerError::NoHost);
    };
    if !danger_allow_insecure {
        let blocked = match host {
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
            url::Host::Ipv4(ip) => !is_public(ip.into()),
            url::Host::Ipv6(ip) => !is_public(ip.into()),
        };
        if blocked {
            return Err(IssuerError::NonPublicHost);
        }
    }
    Ok(url)
}

/// `audiences`: a non-empty list of non-empty values.
/// The most names `extra_claims` may list.
pub const MAX_EXTRA_CLAIMS: usize = 1000;
/// The longest name in `extra_claims`.
pub const MAX_CLAIM_NAME_CHARS: usize = 256;

/// `extra_claims`: at most [`MAX_EXTRA_CLAIMS`] top-level claim names, each 1 to
/// [`MAX_CLAIM_NAME_CHARS`] characters without a `.` (the checks look at top-level names).
pub fn extra_claims(raw: &RawIssuer) -> Result<(), IssuerError> {
    let names = raw.extra_claims.as_deref().unwrap_or_default();
    if names.len() > MAX_EXTRA_CLAIMS {
        return Err(IssuerError::BadExtraClaim(None));
    }
    match names
        .iter()
        .find(|n| n.is_empty() || n.chars().count() > MAX_CLAIM_NAME_CHARS || n.contains('.'))
    {
        Some(bad) => Err(IssuerError::BadExtraClaim(Some(bad.chars().take(64).collect()))),
        None => Ok(()),
    }
}

pub fn audiences(raw: &RawIssuer) -> Result<(), IssuerError> {
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        return Err(IssuerError::NoAudiences);
    }
    Ok(())
}

/// At most one of `jwks_uri`, `jwks` and `jwks_file` (none: discovery).
pub fn one_key_source(raw: &RawIssuer) -> Result<(), IssuerError> {
    let given = [
        raw.jwks_uri.is_some(),
        raw.jwks.is_some(),
        raw.jwks_file.is_some(),
    ];
    if given.iter().filter(|b| **b).count() > 1 {
        return Err(IssuerError::SeveralKeySources);
    }
    Ok(())
}

/// `jwks`: a key set written inline, with at least one usable key.
pub fn static_jwks(jwks: &serde_json::Value) -> Result<KeySet, IssuerError> {
    match KeySet::from_jwks_value(jwks) {
        Ok(set) if !set.is_empty() => Ok(set),
        Ok(_) => Err(IssuerError::EmptyKeySet),
        Err(e) => Err(IssuerError::InvalidKeySet(e)),
    }
}

/// `algorithms`: the kind's when left out; each one known, at least one. Returns the
/// algorithms understood and one error per problem.
pub fn algorithms(raw: &RawIssuer, kind: IssuerKind) -> (Vec<Algorithm>, Vec<IssuerError>) {
    let Some(list) = &raw.algorithms else {
        return (kind.default_algorithms(), Vec::new());
    };
    let mut algs = Vec::new();
    let mut errors = Vec::new();
    for a in list {
        match a.parse::<Algorithm>() {
            Ok(alg) => algs.push(alg),
            Err(e) => errors.push(IssuerError::UnknownAlgorithm(e)),
        }
    }
    if list.is_empty() {
        errors.push(IssuerError::NoAlgorithms);
    }
    (algs, errors)
}

/// The checks of a `kind: aws-iam` issuer, which has no keys and no tokens: `issuer` a
/// name, not a URL; `accounts` 12-digit IDs; `server_id`; `sts_endpoints` https URLs
/// (http and private addresses with `danger_allow_insecure`); and none of the token
/// fields. One `(field, error)` per problem, in field order.
pub fn aws_iam(raw: &RawIssuer) -> Vec<(&'static str, IssuerError)> {
    let mut problems = Vec::new();
    if raw.issuer.starts_with("https://") || raw.issuer.starts_with("http://") {
        problems.push(("issuer", IssuerError::AwsIamIssuerIsUrl));
    }
    match raw.accounts.as_deref() {
        None | Some([]) => problems.push(("accounts", IssuerError::NoAccounts)),
        Some(list) => {
            for a in list {
                if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                    problems.push(("accounts", IssuerError::BadAccount(a.clone())));
                }
            }
        }
    }
    let server_id_ok = raw.server_id.as_deref().is_some_and(|id| {
        !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    });
    if !server_id_ok {
        problems.push(("server_id", IssuerError::BadServerId));
    }
    match raw.sts_endpoints.as_deref() {
        None | Some([]) => problems.push(("sts_endpoints", IssuerError::NoStsEndpoints)),
        Some(list) => {
            for url in list {
                if let Err(e) = check_fetch_url(url, raw.danger_allow_insecure) {
                    problems.push(("sts_endpoints", e));
                }
            }
        }
    }
    for (field, given) in [
        ("audiences", !raw.audiences.is_empty()),
        ("jwks_uri", raw.jwks_uri.is_some()),
        ("jwks", raw.jwks.is_some()),
        ("jwks_file", raw.jwks_file.is_some()),
        ("algorithms", raw.algorithms.is_some()),
        ("max_token_lifetime", raw.max_token_lifetime.is_some()),
        ("allow_access_tokens", raw.allow_access_tokens),
        ("tls_ca_file", raw.tls_ca_file.is_some()),
    ] {
        if given {
            problems.push((field, IssuerError::NotForAwsIam));
        }
    }
    problems
}

/// An STS endpoint as the broker compares it: parsed (so scheme and host case, a
/// default port and an empty path are spelt one way), without a trailing `/`. `None`
/// when not a URL.
pub fn sts_endpoint_key(text: &str) -> Option<String> {
    let url = Url::parse(text).ok()?;
    Some(url.as_str().trim_end_matches('/').to_string())
}

/// `replay`: `one_time` (default) or `reusable`.
pub fn replay(raw: &RawIssuer) -> Result<ReplayMode, IssuerError> {
    match raw.replay.as_deref() {
        None | Some("one_time") => Ok(ReplayMode::OneTime),
        Some("reusable") => Ok(ReplayMode::Reusable),
        Some(other) => Err(IssuerError::UnknownReplay(other.to_string())),
    }
}

/// `max_token_lifetime` in seconds (default [`DEFAULT_MAX_TOKEN_LIFETIME`]).
pub fn max_token_lifetime(raw: &RawIssuer) -> Result<u64, IssuerError> {
    match raw.max_token_lifetime.as_deref() {
        None => Ok(DEFAULT_MAX_TOKEN_LIFETIME),
        Some(text) => {
            federation_rules::parse_duration(text).map_err(|e| IssuerError::Duration(e.to_string()))
        }
    }
}

/// Every check above, in the order the broker's configuration reports them, for an
/// issuer checked on its own (no files read: `jwks_file` and `tls_ca_file` are the
/// broker's to open; no other issuers: duplicate names and URLs are the broker's too).
pub fn check(raw: &RawIssuer) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |field: &'static str, result: Result<(), IssuerError>| {
        if let Err(error) = result {
            problems.push(Problem { field, error });
        }
    };
    let kind = kind(raw).unwrap_or_else(|e| {
        report("kind", Err(e));
        IssuerKind::Generic
    });
    let params = kind_params(raw);
    let issuer = issuer_url(raw, kind, &params).unwrap_or_else(|e| {
        report("issuer", Err(e));
        String::new()
    });
    report("kind", kind_config(kind, &issuer, &params));
    report("name", name(raw));
    report("extra_claims", extra_claims(raw));
    if kind == IssuerKind::AwsIam {
        for (field, e) in aws_iam(raw) {
            report(field, Err(e));
        }
        report("replay", replay(raw).map(drop));
        return problems;
    }
    report(
        "issuer",
        check_fetch_url(&issuer, raw.danger_allow_insecure).map(drop),
    );
    report("audiences", audiences(raw));
    report("jwks_uri", one_key_source(raw));
    if let Some(uri) = &raw.jwks_uri {
        report(
            "jwks_uri",
            check_fetch_url(uri, raw.danger_allow_insecure).map(drop),
        );
    } else if let Some(jwks) = &raw.jwks {
        report("jwks", static_jwks(jwks).map(drop));
    }
    for e in algorithms(raw, kind).1 {
        report("algorithms", Err(e));
    }
    report("replay", replay(raw).map(drop));
    report("max_token_lifetime", max_token_lifetime(raw).map(drop));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(json: serde_json::Value) -> RawIssuer {
        serde_json::from_value(json).expect("raw issuer")
    }

    #[test]
    fn fetch_urls() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("https://issuer.example.com", false, None),
            ("http://issuer.example.com", false, Some("must be https://")),
            ("http://issuer.example.com", true, None),
            (
                "ftp://issuer.example.com",
                false,
                Some("unsupported scheme `ftp`"),
            ),
            ("https://issuer.example.com/?a=b", false, Some("query")),
            ("https://u@issuer.example.com", false, Some("credentials")),
            ("https://127.0.0.1", false, Some("loopback, private")),
            ("https://10.1.2.3/keys", false, Some("loopback, private")),
            ("https://[::1]/", false, Some("loopback, private")),
            ("https://LOCALHOST./", false, Some("loopback, private")),
            ("https://a.localhost", false, Some("loopback, private")),
            ("https://127.0.0.1", true, None),
            ("not a url", false, Some("not a URL")),
        ];
        for (url, insecure, want) in cases {
            let got = check_fetch_url(url, *insecure).err().map(|e| e.to_string());
            match (want, &got) {
                (None, None) => {}
                (Some(want), Some(got)) if got.contains(want) => {}
                _ => panic!("{url} (insecure {insecure}): got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_valid_issuer_has_no_problem() {
        let raw = issuer(serde_json::json!({"name": "gha", "kind": "github-actions", "audiences": ["x"]}));
        assert_eq!(check(&raw), vec![]);
    }

    #[test]
    fn aws_iam_issuers() {
        let good = serde_json::json!({
            "name": "aws", "kind": "aws-iam", "issuer": "aws-iam:prod",
            "accounts": ["111122223333"], "server_id": "fedbroker.example.com",
            "sts_endpoints": ["https://sts.amazonaws.com"]
        });
        assert_eq!(check(&issuer(good.clone())), vec![]);
        let fields = |patch: serde_json::Value| -> Vec<(&'static str, String)> {
            let mut v = good.clone();
            for (k, x) in patch.as_object().expect("object") {
                if x.is_null() {
                    v.as_object_mut().expect("object").remove(k);
                } else {
                    v[k] = x.clone();
                }
            }
            check(&issuer(v))
                .into_iter()
                .map(|p| (p.field, p.error.to_string()))
                .collect()
        };
        let only = |patch, field: &str, words: &str| {
            let got = fields(patch);
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].0, field, "{got:?}");
            assert!(got[0].1.contains(words), "{got:?}");
        };
        use serde_json::json;
        only(json!({"issuer": null}), "issuer", "required for kind aws-iam");
        only(json!({"issuer": "https://x.example"}), "issuer", "not a URL");
        only(json!({"accounts": []}), "accounts", "12-digit");
        only(json!({"accounts": ["1234"]}), "accounts", "`1234`");
        only(json!({"server_id": ""}), "server_id", "required for kind aws-iam");
        only(
            json!({"server_id": null}),
            "server_id",
            "required for kind aws-iam",
        );
        only(json!({"sts_endpoints": null}), "sts_endpoints", "STS endpoint");
        only(
            json!({"sts_endpoints": ["http://127.0.0.1:5000"]}),
            "sts_endpoints",
            "https",
        );
        only(
            json!({"audiences": ["x"]}),
            "audiences",
            "not used by kind aws-iam",
        );
        only(
            json!({"jwks_uri": "https://k.example"}),
            "jwks_uri",
            "not used by kind aws-iam",
        );
        only(
            json!({"algorithms": ["RS256"]}),
            "algorithms",
            "not used by kind aws-iam",
        );
        let insecure = json!({"sts_endpoints": ["http://127.0.0.1:5000"], "danger_allow_insecure": true});
        assert_eq!(fields(insecure), vec![]);
    }

    #[test]
    fn the_aws_iam_fields_belong_to_aws_iam() {
        let raw = issuer(
            serde_json::json!({"name": "gha", "kind": "github-actions", "audiences": ["x"], "server_id": "s"}),
        );
        let problems = check(&raw);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "kind");
        assert!(
            problems[0]
                .error
                .to_string()
                .contains("`server_id` is only for kind aws-iam")
        );
    }

    #[test]
    fn sts_endpoint_keys() {
        for (a, b) in [
            ("https://sts.amazonaws.com", "https://STS.amazonaws.com/"),
            ("https://sts.amazonaws.com:443/", "https://sts.amazonaws.com"),
            ("http://127.0.0.1:5000", "http://127.0.0.1:5000/"),
        ] {
            assert_eq!(sts_endpoint_key(a), sts_endpoint_key(b), "{a} {b}");
        }
        assert_ne!(
            sts_endpoint_key("https://sts.amazonaws.com"),
            sts_endpoint_key("https://sts.amazonaws.com.evil.example")
        );
        assert_ne!(
            sts_endpoint_key("https://sts.amazonaws.com"),
            sts_endpoint_key("https://sts.amazonaws.com/x")
        );
        assert_eq!(sts_endpoint_key("not a url"), None);
    }

    #[test]
    fn problems_come_in_the_brokers_order() {
        let raw = issuer(serde_json::json!({
            "name": "", "kind": "githab", "audiences": [], "replay": "twice",
            "algorithms": ["HS256"], "max_token_lifetime": "forever",
            "jwks_uri": "http://keys.example.com", "jwks": {"keys": []}
        }));
        let fields: Vec<&str> = check(&raw).iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "kind",
                "issuer",
                "name",
                "issuer",
                "audiences",
                "jwks_uri",
                "jwks_uri",
                "algorithms",
                "replay",
                "max_token_lifetime"
            ]
        );
    }

    #[test]
    fn extra_claims_are_top_level_names_and_bounded() {
        let with = |names: Vec<String>| RawIssuer {
            extra_claims: Some(names),
            ..RawIssuer::default()
        };
        assert_eq!(extra_claims(&RawIssuer::default()), Ok(()));
        assert_eq!(
            extra_claims(&with(vec!["department".into(), "xms_pdl".into()])),
            Ok(())
        );
        for bad in ["", "a.b", &"x".repeat(MAX_CLAIM_NAME_CHARS + 1)] {
            let e = extra_claims(&with(vec![bad.to_owned()])).expect_err(bad);
            assert!(e.to_string().contains("top-level claim name"), "{e}");
        }
        let many = (0..=MAX_EXTRA_CLAIMS).map(|i| format!("c{i}")).collect();
        assert_eq!(
            extra_claims(&with(many)).expect_err("too many").to_string(),
            format!("at most {MAX_EXTRA_CLAIMS} names")
        );
    }
}
