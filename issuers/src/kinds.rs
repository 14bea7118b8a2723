//! Issuer kinds: what a `kind:` on an issuer brings. Each kind knows the platform's
//! default issuer URL and algorithms, the claims its tokens must carry (checked after the
//! signature verified), which header `typ` values it sends, and which claims are worth
//! showing in the audit log and in `explain`.
//!
//! The claim shapes follow each platform's documentation: GitHub Actions' and GitLab CI's
//! OIDC ID tokens, Kubernetes projected service-account tokens (also from EKS, GKE and
//! AKS), Entra ID (v1 and v2) tokens, Google's metadata-server ID tokens, AWS IAM
//! outbound identity federation tokens (`GetWebIdentityToken`) and SPIFFE JWT-SVIDs.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::verify::VerifiedToken;

/// The kinds of issuer fedbroker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IssuerKind {
    #[default]
    Generic,
    GithubActions,
    Gitlab,
    Kubernetes,
    Eks,
    Gke,
    Aks,
    AzureEntra,
    Google,
    AwsOutbound,
    Spiffe,
    /// AWS workloads without OIDC: a signed `sts:GetCallerIdentity` request, not a token
    /// (see [`crate::aws_iam`]).
    AwsIam,
}

/// Per-issuer parameters some kinds need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindParams {
    /// `azure-entra`: the tenant ID (a GUID) whose tokens are accepted.
    pub tenant: Option<String>,
    /// `azure-entra`: `v1` (`https://sts.windows.net/{tenant}/`) or `v2` (the default,
    /// `https://login.microsoftonline.com/{tenant}/v2.0`).
    pub entra_version: Option<String>,
    /// `spiffe`: the trust domain every accepted SPIFFE ID must be in.
    pub trust_domain: Option<String>,
    /// `aws-iam`: the accepted AWS account IDs.
    pub accounts: Option<Vec<String>>,
    /// `aws-iam`: the value the signed request's `x-fedbroker-server-id` must carry.
    pub server_id: Option<String>,
    /// `aws-iam`: the STS endpoints signed requests may be forwarded to.
    pub sts_endpoints: Option<Vec<String>>,
}

/// A token that verified but is not shaped as its issuer's kind requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("{kind}: claim `{claim}` is missing or of the wrong type")]
    MissingClaim { kind: IssuerKind, claim: &'static str },
    #[error("{kind}: {message}")]
    Invalid { kind: IssuerKind, message: String },
    #[error("{kind}: header typ {typ:?} is not accepted from this issuer")]
    Typ { kind: IssuerKind, typ: String },
}

/// A configuration problem with a kind's parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KindConfigError(pub String);

impl IssuerKind {
    pub const ALL: [IssuerKind; 12] = [
        IssuerKind::Generic,
        IssuerKind::GithubActions,
        IssuerKind::Gitlab,
        IssuerKind::Kubernetes,
        IssuerKind::Eks,
        IssuerKind::Gke,
        IssuerKind::Aks,
        IssuerKind::AzureEntra,
        IssuerKind::Google,
        IssuerKind::AwsOutbound,
        IssuerKind::Spiffe,
        IssuerKind::AwsIam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Generic => "generic",
            IssuerKind::GithubActions => "github-actions",
            IssuerKind::Gitlab => "gitlab",
            IssuerKind::Kubernetes => "kubernetes",
            IssuerKind::Eks => "eks",
            IssuerKind::Gke => "gke",
            IssuerKind::Aks => "aks",
            IssuerKind::AzureEntra => "azure-entra",
            IssuerKind::Google => "google",
            IssuerKind::AwsOutbound => "aws-outbound",
            IssuerKind::Spiffe => "spiffe",
            IssuerKind::AwsIam => "aws-iam",
        }
    }

    fn is_kubernetes(self) -> bool {
        matches!(
            self,
            IssuerKind::Kubernetes | IssuerKind::Eks | IssuerKind::Gke | IssuerKind::Aks
        )
    }

    /// The issuer URL when the config leaves `issuer` out (platforms with one issuer).
    pub fn default_issuer(self, params: &KindParams) -> Result<Option<String>, KindConfigError> {
        Ok(match self {
            IssuerKind::GithubActions => Some("https://token.actions.githubusercontent.com".into()),
            IssuerKind::Gitlab => Some("https://gitlab.com".into()),
            IssuerKind::Google => Some("https://accounts.google.com".into()),
            IssuerKind::AzureEntra => {
                let tenant = params.tenant.as_deref().ok_or_else(|| {
                    KindConfigError("azure-entra needs `tenant` (the directory's tenant ID)".into())
                })?;
                Some(match params.entra_version.as_deref() {
                    Some("v1") => format!("https://sts.windows.net/{tenant}/"),
                    _ => format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                })
            }
            _ => None,
        })
    }

    /// The algorithms the platform signs with, when the config lists none.
    pub fn default_algorithms(self) -> Vec<Algorithm> {
        match self {
            IssuerKind::Generic | IssuerKind::Kubernetes => vec![Algorithm::RS256, Algorithm::ES256],
            IssuerKind::AwsOutbound => vec![Algorithm::RS256, Algorithm::ES384],
            IssuerKind::Spiffe => vec![Algorithm::RS256, Algorithm::ES256, Algorithm::ES384],
            _ => vec![Algorithm::RS256],
        }
    }

    /// Check the kind's parameters and the shape of the configured issuer URL.
    pub fn check_config(self, issuer: &str, params: &KindParams) -> Result<(), KindConfigError> {
        let err = |m: String| Err(KindConfigError(m));
        if params.tenant.is_some() && self != IssuerKind::AzureEntra {
            return err("`tenant` is only for kind azure-entra".into());
        }
        if params.entra_version.is_some() && self != IssuerKind::AzureEntra {
            return err("`entra_version` is only for kind azure-entra".into());
        }
        if params.trust_domain.is_some() && self != IssuerKind::Spiffe {
            return err("`trust_domain` is only for kind spiffe".into());
        }
        if self != IssuerKind::AwsIam {
            for (field, given) in [
                ("accounts", params.accounts.is_some()),
                ("server_id", params.server_id.is_some()),
                ("sts_endpoints", params.sts_endpoints.is_some()),
            ] {
                if given {
                    return err(format!("`{field}` is only for kind aws-iam"));
                }
            }
        }
        match self {
            IssuerKind::AzureEntra => {
                let tenant = params.tenant.as_deref().unwrap_or_default();
                let guid_like = tenant.len() == 36
                    && tenant.chars().enumerate().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => c == '-',
                        _ => c.is_ascii_hexdigit(),
                    });
                if !guid_like {
                    return err(format!(
                        "azure-entra `tenant` must be a tenant ID (GUID), not {tenant:?}: multi-tenant \
                         names such as common or organizations would accept every tenant"
                    ));
                }
                if !matches!(params.entra_version.as_deref(), None | Some("v1") | Some("v2")) {
                    return err("azure-entra `entra_version` is v1 or v2".into());
                }
                let expected = self.default_issuer(params)?.unwrap_or_default();
                if issuer != expected {
                    return err(format!(
                        "azure-entra issuer for this tenant and version is {expected}"
                    ));
                }
            }
            IssuerKind::Spiffe => {
                let td = params.trust_domain.as_deref().unwrap_or_default();
                if !valid_trust_domain(td) {
                    return err(format!(
                        "spiffe needs `trust_domain` (e.g. example.org), got {td:?}"
                    ));
                }
            }
            IssuerKind::Eks if !issuer.starts_with("https://oidc.eks.") => {
                return err(
                    "eks issuers look like https://oidc.eks.REGION.amazonaws.com/id/CLUSTER_ID".into(),
                );
            }
            IssuerKind::Gke if !issuer.starts_with("https://container.googleapis.com/v1/projects/") => {
                return err(
                    "gke issuers look like https://container.googleapis.com/v1/projects/P/locations/L/clusters/C"
                        .into(),
                );
            }
            IssuerKind::Aks if !issuer.contains(".oic.prod-aks.azure.com/") => {
                return err(
                    "aks issuers look like https://REGION.oic.prod-aks.azure.com/TENANT/GUID/".into(),
                );
            }
            IssuerKind::AwsOutbound if !issuer.ends_with(".tokens.sts.global.api.aws") => {
                return err("aws-outbound issuers look like https://ID.tokens.sts.global.api.aws".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// The `issuer` a discovery document may name for this issuer. Entra's multi-tenant
    /// documents say `{tenantid}`; it stands for the configured tenant and nothing else.
    pub fn discovery_issuer_matches(self, configured: &str, document: &str, params: &KindParams) -> bool {
        if configured == document {
            return true;
        }
        match (self, params.tenant.as_deref()) {
            (IssuerKind::AzureEntra, Some(tenant)) => document.replace("{tenantid}", tenant) == configured,
            _ => false,
        }
    }

    /// Header `typ` values this kind's tokens carry (`None`: no `typ` is fine too).
    /// Anything else, notably `at+jwt` access tokens where an ID token is expected, is
    /// refused unless the issuer sets `allow_access_tokens`.
    fn accepts_typ(self, typ: Option<&str>, allow_access_tokens: bool) -> bool {
        let Some(typ) = typ else { return true };
        let t = typ.to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        match t {
            "jwt" => true,
            "jose" => self == IssuerKind::Spiffe || self == IssuerKind::Generic,
            "at+jwt" => allow_access_tokens,
            _ => self == IssuerKind::Generic && allow_access_tokens,
        }
    }

    /// The kind's checks on a verified token: its header `typ`, then
    /// [`check_claims`](Self::check_claims).
    pub fn check(
        self,
        token: &VerifiedToken,
        params: &KindParams,
        allow_access_tokens: bool,
    ) -> Result<(), KindError> {
        if !self.accepts_typ(token.header.typ.as_deref(), allow_access_tokens) {
            return Err(KindError::Typ {
                kind: self,
                typ: token.header.typ.clone().unwrap_or_default(),
            });
        }
        self.check_claims(&token.claims, params)
    }

    /// The kind's checks on a claims set (its `sub` included): the one function behind
    /// both `/token` (through [`check`](Self::check), after the signature verified) and
    /// `fedbroker explain --claims` (a claims document, no token), so the two can never
    /// decide differently. A missing or non-string `sub` counts as empty.
    pub fn check_claims(self, claims: &Map<String, Value>, params: &KindParams) -> Result<(), KindError> {
        let c = claims;
        let subject = c.get("sub").and_then(Value::as_str).unwrap_or_default();
        let invalid = |message: String| KindError::Invalid { kind: self, message };
        let need = |claim: &'static str| -> Result<&str, KindError> {
            c.get(claim)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(KindError::MissingClaim { kind: self, claim })
        };
        match self {
            IssuerKind::Generic => {}
            IssuerKind::GithubActions => {
                let repo = need("repository")?;
                need("repository_owner")?;
                if !subject.starts_with(&format!("repo:{repo}:")) {
                    return Err(invalid(format!("sub does not start with repo:{repo}:")));
                }
            }
            IssuerKind::Gitlab => {
                let path = need("project_path")?;
                need("namespace_path")?;
                if !subject.starts_with(&format!("project_path:{path}:")) {
                    return Err(invalid(format!("sub does not start with project_path:{path}:")));
                }
            }
            k if k.is_kubernetes() => {
                let kube =
                    c.get("kubernetes.io")
                        .and_then(Value::as_object)
                        .ok_or(KindError::MissingClaim {
                            kind: self,
                            claim: "kubernetes.io",
                        })?;
                let ns = kube.get("namespace").and_then(Value::as_str);
                let sa = kube
                    .get("serviceaccount")
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str);
                let (Some(ns), Some(sa)) = (ns, sa) else {
                    return Err(invalid(
                        "kubernetes.io lacks namespace or serviceaccount.name".into(),
                    ));
                };
                if subject != format!("system:serviceaccount:{ns}:{sa}") {
                    return Err(invalid(
                        "sub disagrees with kubernetes.io namespace/serviceaccount".into(),
                    ));
                }
            }
            IssuerKind::AzureEntra => {
                let tid = need("tid")?;
                if Some(tid) != params.tenant.as_deref() {
                    return Err(invalid("tid is not the configured tenant".into()));
                }
                need("oid")?;
                let ver = need("ver")?;
                let expected = match params.entra_version.as_deref() {
                    Some("v1") => "1.0",
                    _ => "2.0",
                };
                if ver != expected {
                    return Err(invalid(format!("ver {ver:?} where {expected:?} is configured")));
                }
            }
            IssuerKind::Google if c.contains_key("email") => {
                let verified = matches!(c.get("email_verified"), Some(Value::Bool(true)))
                    || c.get("email_verified").and_then(Value::as_str) == Some("true");
                if !verified {
                    return Err(invalid("email is present but email_verified is not true".into()));
                }
            }
            IssuerKind::AwsOutbound => {
                let account =
                    arn_account(subject).ok_or_else(|| invalid("sub is not an IAM principal ARN".into()))?;
                let ns = c
                    .get(AWS_NAMESPACE)
                    .and_then(Value::as_object)
                    .ok_or(KindError::MissingClaim {
                        kind: self,
                        claim: AWS_NAMESPACE,
                    })?;
                if ns.get("aws_account").and_then(Value::as_str) != Some(account) {
                    return Err(invalid("aws_account disagrees with the account in sub".into()));
                }
            }
            IssuerKind::AwsIam => {
                let arn = need("arn")?;
                let account = need("account")?;
                if subject != arn {
                    return Err(invalid("sub is not the arn".into()));
                }
                if arn_account(arn) != Some(account) {
                    return Err(invalid("arn is not a principal of account".into()));
                }
                need("user_id")?;
                let listed = params.accounts.as_deref().unwrap_or_default();
                if !listed.iter().any(|a| a == account) {
                    return Err(invalid("account is not one of the issuer's accounts".into()));
                }
            }
            IssuerKind::Spiffe => {
                let td = params.trust_domain.as_deref().unwrap_or_default();
                match spiffe_trust_domain(subject) {
                    Some(found) if found == td => {}
                    Some(_) => return Err(invalid(format!("sub is not in trust domain {td}"))),
                    None => return Err(invalid("sub is not a valid SPIFFE ID".into())),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Claims worth showing in the audit log and `explain` for this kind.
    pub fn audit_fields(self, claims: &Map<String, Value>) -> Map<String, Value> {
        let pick: &[&str] = match self {
            IssuerKind::GithubActions => &[
                "repository",
                "ref",
                "environment",
                "workflow",
                "job_workflow_ref",
                "event_name",
                "run_id",
                "actor",
                "runner_environment",
            ],
            IssuerKind::Gitlab => &[
                "project_path",
                "ref",
                "ref_type",
                "environment",
                "pipeline_id",
                "pipeline_source",
                "job_id",
                "user_login",
            ],
            IssuerKind::AzureEntra => &["tid", "oid", "appid", "azp", "xms_mirid", "ver"],
            IssuerKind::Google => &["email", "azp"],
            IssuerKind::AwsIam => &["arn", "account", "user_id", "role_name", "session_name"],
            _ => &[],
        };
        let mut out = Map::new();
        for k in pick {
            if let Some(v) = claims.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
        if self.is_kubernetes()
            && let Some(kube) = claims.get("kubernetes.io")
        {
            for (field, path) in [
                ("namespace", &["namespace"][..]),
                ("serviceaccount", &["serviceaccount", "name"][..]),
                ("pod", &["pod", "name"][..]),
            ] {
                let v = path.iter().try_fold(kube, |v, k| v.get(*k));
                if let Some(v) = v {
                    out.insert(field.into(), v.clone());
                }
            }
        }
        if self == IssuerKind::AwsOutbound
            && let Some(ns) = claims.get(AWS_NAMESPACE)
        {
            for k in ["aws_account", "source_region", "org_id"] {
                if let Some(v) = ns.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
        }
        if self == IssuerKind::Spiffe
            && let Some(td) = claims
                .get("sub")
                .and_then(Value::as_str)
                .and_then(spiffe_trust_domain)
        {
            out.insert("trust_domain".into(), Value::String(td.to_string()));
        }
        out
    }
}

/// The claim namespace of AWS outbound identity federation tokens.
pub const AWS_NAMESPACE: &str = "https://sts.amazonaws.com/";

/// The account of an IAM principal ARN (`arn:aws:iam::123456789012:role/x`,
/// `arn:aws:sts::123456789012:assumed-role/x/y`; also the aws-cn and aws-us-gov
/// partitions).
pub(crate) fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let ok = arn_ == "arn"
        && matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        && matches!(service, "iam" | "sts")
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !resource.is_empty();
    ok.then_some(account)
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

/// The trust domain of a valid SPIFFE ID (SPIFFE-ID spec §2), or `None`.
pub fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !valid_trust_domain(td) || id.len() > 2048 {
        return None;
    }
    if !path.is_empty() {
        for seg in path[1..].split('/') {
            let ok = !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !ok {
                return None;
            }
        }
    }
    Some(td)
}

impl fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IssuerKind {
    type Err = KindConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IssuerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = IssuerKind::ALL.iter().map(|k| k.as_str()).collect();
                KindConfigError(format!(
                    "unknown kind `{s}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::KeySet;
    use crate::test_support::{key_for, mint};
    use crate::verify::{IssuerPolicy, verify};

    const NOW: u64 = 1_800_000_000;
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn fixture(kind: IssuerKind) -> Value {
        let text = match kind {
            IssuerKind::GithubActions => include_str!("../tests/fixtures/kinds/github-actions.json"),
            IssuerKind::Gitlab => include_str!("../tests/fixtures/kinds/gitlab.json"),
            IssuerKind::Kubernetes => include_str!("../tests/fixtures/kinds/kubernetes.json"),
            IssuerKind::Eks => include_str!("../tests/fixtures/kinds/eks.json"),
            IssuerKind::Gke => include_str!("../tests/fixtures/kinds/gke.json"),
            IssuerKind::Aks => include_str!("../tests/fixtures/kinds/aks.json"),
            IssuerKind::AzureEntra => include_str!("../tests/fixtures/kinds/azure-entra.json"),
            IssuerKind::Google => include_str!("../tests/fixtures/kinds/google.json"),
            IssuerKind::AwsOutbound => include_str!("../tests/fixtures/kinds/aws-outbound.json"),
            IssuerKind::Spiffe => include_str!("../tests/fixtures/kinds/spiffe.json"),
            IssuerKind::Generic => r#"{"iss": "https://idp.example.com", "aud": "x", "sub": "s"}"#,
            IssuerKind::AwsIam => {
                r#"{"iss": "aws-iam:prod", "aud": "x", "sub": "arn:aws:iam::123456789012:user/ci", "arn": "arn:aws:iam::123456789012:user/ci", "account": "123456789012", "user_id": "AIDAEXAMPLE"}"#
            }
        };
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn params(kind: IssuerKind) -> KindParams {
        match kind {
            IssuerKind::AzureEntra => KindParams {
                tenant: Some(TENANT.into()),
                ..Default::default()
            },
            IssuerKind::Spiffe => KindParams {
                trust_domain: Some("example.org".into()),
                ..Default::default()
            },
            IssuerKind::AwsIam => KindParams {
                accounts: Some(vec!["123456789012".into()]),
                server_id: Some("fedbroker.example.com".into()),
                sts_endpoints: Some(vec!["https://sts.amazonaws.com".into()]),
                ..Default::default()
            },
            _ => KindParams::default(),
        }
    }

    /// Sign the claims as the platform would (RS256, or ES384 for AWS), verify them like
    /// the broker does, then apply the kind's checks.
    fn check(kind: IssuerKind, claims: &Value, typ: Option<&str>) -> Result<VerifiedToken, KindError> {
        let alg = if kind == IssuerKind::AwsOutbound {
            Algorithm::ES384
        } else {
            Algorithm::RS256
        };
        let key = key_for(alg);
        let mut claims = claims.clone();
        claims["iat"] = json!(NOW - 10);
        claims["exp"] = json!(NOW + 300);
        let mut header = json!({"alg": alg.as_str(), "kid": key.kid});
        if let Some(t) = typ {
            header["typ"] = json!(t);
        }
        let token = mint(&header, &claims, key, alg);
        let iss = claims["iss"].as_str().expect("iss").to_string();
        let aud = match &claims["aud"] {
            Value::Array(a) => a[0].as_str().expect("aud").to_string(),
            v => v.as_str().expect("aud").to_string(),
        };
        let policy = IssuerPolicy {
            issuer: iss.clone(),
            audiences: vec![aud],
            algorithms: kind.default_algorithms(),
            max_token_lifetime: Some(3600),
            clock_skew: 60,
        };
        kind.check_config(&iss, &params(kind))
            .expect("fixture issuer fits its kind");
        let keys = KeySet::from_jwks_value(&json!({"keys": [key.jwk]})).expect("keys");
        let peeked = crate::jose::peek(&token).expect("peek");
        let verified = verify(&peeked, &policy, &keys, NOW).expect("verifies");
        kind.check(&verified, &params(kind), false).map(|()| verified)
    }

    #[test]
    fn every_kinds_fixture_token_passes_its_checks() {
        for kind in IssuerKind::ALL {
            let claims = fixture(kind);
            let verified = check(kind, &claims, Some("JWT")).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let fields = kind.audit_fields(&verified.claims);
            let expected: &[&str] = match kind {
                IssuerKind::GithubActions => &["repository", "ref", "workflow", "event_name"],
                IssuerKind::Gitlab => &["project_path", "ref", "pipeline_id"],
                IssuerKind::Kubernetes | IssuerKind::Eks | IssuerKind::Gke | IssuerKind::Aks => {
                    &["namespace", "serviceaccount"]
                }
                IssuerKind::AzureEntra => &["tid", "oid"],
                IssuerKind::Google => &["email"],
                IssuerKind::AwsOutbound => &["aws_account", "source_region"],
                IssuerKind::Spiffe => &["trust_domain"],
                IssuerKind::AwsIam => &["arn", "account", "user_id"],
                IssuerKind::Generic => &[],
            };
            for f in expected {
                assert!(
                    fields.contains_key(*f),
                    "{kind}: audit field {f} missing from {fields:?}"
                );
            }
        }
    }

    #[test]
    fn kinds_refuse_tokens_not_shaped_like_theirs() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(IssuerKind, Mutation)> = vec![
            (
                IssuerKind::GithubActions,
                Box::new(|c| c["sub"] = json!("repo:evil/repo:ref:refs/heads/main")),
            ),
            (
                IssuerKind::GithubActions,
                Box::new(|c| {
                    c.as_object_mut().map(|m| m.remove("repository_owner"));
                }),
            ),
            (
                IssuerKind::Gitlab,
                Box::new(|c| c["sub"] = json!("project_path:other/project:ref_type:branch:ref:main")),
            ),
            (
                IssuerKind::Eks,
                Box::new(|c| c["sub"] = json!("system:serviceaccount:kube-system:admin")),
            ),
            (
                IssuerKind::Gke,
                Box::new(|c| {
                    c.as_object_mut().map(|m| m.remove("kubernetes.io"));
                }),
            ),
            (
                IssuerKind::AzureEntra,
                Box::new(|c| c["tid"] = json!("00000000-0000-0000-0000-000000000000")),
            ),
            (IssuerKind::AzureEntra, Box::new(|c| c["ver"] = json!("1.0"))),
            (
                IssuerKind::Google,
                Box::new(|c| c["email_verified"] = json!(false)),
            ),
            (
                IssuerKind::AwsOutbound,
                Box::new(|c| c["sub"] = json!("arn:aws:iam::999999999999:role/Other")),
            ),
            (
                IssuerKind::AwsOutbound,
                Box::new(|c| c["sub"] = json!("not-an-arn")),
            ),
            (
                IssuerKind::Spiffe,
                Box::new(|c| c["sub"] = json!("spiffe://other.org/ns/payments/sa/api")),
            ),
            (
                IssuerKind::AwsIam,
                Box::new(|c| {
                    c["sub"] = json!("arn:aws:iam::999999999999:user/ci");
                    c["arn"] = json!("arn:aws:iam::999999999999:user/ci");
                    c["account"] = json!("999999999999");
                }),
            ),
            (
                IssuerKind::AwsIam,
                Box::new(|c| c["sub"] = json!("arn:aws:iam::123456789012:user/other")),
            ),
            (
                IssuerKind::AwsIam,
                Box::new(|c| c["account"] = json!("210987654321")),
            ),
            (
                IssuerKind::Spiffe,
                Box::new(|c| c["sub"] = json!("spiffe://example.org/ns/../sa/api")),
            ),
        ];
        for (kind, mutate) in cases {
            let mut claims = fixture(kind);
            mutate(&mut claims);
            let signed = check(kind, &claims, None).err();
            assert!(
                signed.is_some(),
                "{kind}: mutated token must be refused: {claims}"
            );
            // `explain --claims` uses check_claims on the document: the same refusal.
            let document = kind.check_claims(claims.as_object().expect("object"), &params(kind));
            assert_eq!(document.err(), signed, "{kind}: {claims}");
        }
        for kind in IssuerKind::ALL {
            let claims = fixture(kind);
            let object = claims.as_object().expect("object");
            assert_eq!(kind.check_claims(object, &params(kind)), Ok(()), "{kind}");
        }
    }

    #[test]
    fn access_tokens_are_refused_where_id_tokens_are_expected() {
        for kind in IssuerKind::ALL {
            let err = check(kind, &fixture(kind), Some("at+jwt")).expect_err("at+jwt refused");
            assert!(matches!(err, KindError::Typ { .. }), "{kind}: {err}");
        }
        // ...unless the issuer allows them.
        let claims = fixture(IssuerKind::Generic);
        let key = key_for(Algorithm::RS256);
        let mut c = claims.clone();
        c["iat"] = json!(NOW);
        c["exp"] = json!(NOW + 60);
        let token = mint(
            &json!({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}),
            &c,
            key,
            Algorithm::RS256,
        );
        let policy = IssuerPolicy {
            issuer: "https://idp.example.com".into(),
            audiences: vec!["x".into()],
            algorithms: vec![Algorithm::RS256],
            max_token_lifetime: None,
            clock_skew: 0,
        };
        let keys = KeySet::from_jwks_value(&json!({"keys": [key.jwk]})).expect("keys");
        let v = verify(&crate::jose::peek(&token).expect("peek"), &policy, &keys, NOW).expect("verify");
        assert!(
            IssuerKind::Generic
                .check(&v, &KindParams::default(), true)
                .is_ok()
        );
    }

    #[test]
    fn config_checks() {
        let entra = KindParams {
            tenant: Some(TENANT.into()),
            ..Default::default()
        };
        let v2 = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        assert_eq!(
            IssuerKind::AzureEntra.default_issuer(&entra).expect("ok"),
            Some(v2.clone())
        );
        assert!(IssuerKind::AzureEntra.check_config(&v2, &entra).is_ok());
        let common = KindParams {
            tenant: Some("common".into()),
            ..Default::default()
        };
        assert!(
            IssuerKind::AzureEntra
                .check_config("https://login.microsoftonline.com/common/v2.0", &common)
                .is_err()
        );
        let v1 = KindParams {
            tenant: Some(TENANT.into()),
            entra_version: Some("v1".into()),
            ..Default::default()
        };
        assert_eq!(
            IssuerKind::AzureEntra.default_issuer(&v1).expect("ok").as_deref(),
            Some(format!("https://sts.windows.net/{TENANT}/").as_str())
        );
        assert!(
            IssuerKind::AzureEntra
                .default_issuer(&KindParams::default())
                .is_err()
        );
        assert!(
            IssuerKind::Eks
                .check_config("https://example.com", &KindParams::default())
                .is_err()
        );
        assert!(
            IssuerKind::Spiffe
                .check_config("https://spire", &KindParams::default())
                .is_err()
        );
        assert!(
            IssuerKind::Gitlab
                .check_config("https://gitlab.com", &entra)
                .is_err(),
            "tenant only for entra"
        );
        assert!("bogus".parse::<IssuerKind>().is_err());
        assert_eq!(
            "github-actions".parse::<IssuerKind>(),
            Ok(IssuerKind::GithubActions)
        );
    }

    #[test]
    fn entra_multi_tenant_discovery_placeholder_means_the_configured_tenant_only() {
        let p = KindParams {
            tenant: Some(TENANT.into()),
            ..Default::default()
        };
        let configured = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        let doc = "https://login.microsoftonline.com/{tenantid}/v2.0";
        assert!(IssuerKind::AzureEntra.discovery_issuer_matches(&configured, doc, &p));
        let other = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0";
        assert!(!IssuerKind::AzureEntra.discovery_issuer_matches(&configured, other, &p));
        assert!(!IssuerKind::Generic.discovery_issuer_matches(&configured, doc, &p));
    }

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            spiffe_trust_domain("spiffe://example.org/ns/a/sa/b"),
            Some("example.org")
        );
        assert_eq!(spiffe_trust_domain("spiffe://example.org"), Some("example.org"));
        for bad in [
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "https://x/y",
            "spiffe://example.org/a/./b",
            "spiffe:///x",
        ] {
            assert_eq!(spiffe_trust_domain(bad), None, "{bad}");
        }
        assert_eq!(
            arn_account("arn:aws:sts::123456789012:assumed-role/R/s"),
            Some("123456789012")
        );
        assert_eq!(arn_account("arn:aws:s3:::bucket"), None);
    }
}
