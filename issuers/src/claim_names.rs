//! The top-level claim names each issuer kind's tokens can carry, in one place, so that
//! `fedbroker check` (and a reload and the admin API) can warn when a rule refers to a
//! claim its issuer's kind never carries, with the nearest known name
//! (`claims.repositry`: did you mean `repository`?).
//!
//! The lists follow each platform's public documentation:
//! - GitHub Actions: "OpenID Connect reference", OIDC token claims (the standard claims,
//!   the custom claims GitHub provides, and repository custom properties, which GitHub
//!   names `repo_property_<name>`);
//! - GitLab CI: "OpenID Connect (OIDC) Authentication Using ID Tokens", token payload
//!   (including the `job_`-prefixed project claims of merge request pipelines from forks);
//! - Kubernetes service-account tokens (also EKS, GKE, AKS): the standard claims and the
//!   `kubernetes.io` object (`namespace`, `serviceaccount`, `pod`, `node`, `secret`,
//!   `warnafter`); legacy secret-based tokens are refused by the kind's checks anyway;
//! - Entra ID: the ID token and access token claims references and the optional claims
//!   reference; `xms_`-prefixed claims, and directory extensions (`extn.`,
//!   `extension_`) count as known;
//! - Google: ID tokens (OpenID Connect, and the metadata server's `google` object);
//! - SPIFFE JWT-SVIDs: the standard claims only (SPIRE adds none by default);
//! - AWS outbound identity federation (`GetWebIdentityToken`): the standard claims and
//!   the `https://sts.amazonaws.com/` namespace, under which every AWS claim is nested;
//! - `aws-iam`: the claims the broker itself makes from STS's answer.
//!
//! The standard JWT claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) are known for
//! every kind. A generic issuer has no list: anything may be in its tokens. Only
//! top-level names are checked (nested keys, such as those under `kubernetes.io`, are
//! used for suggestions only: `claims.namespace`: did you mean
//! `["kubernetes.io"].namespace`?).

use crate::kinds::{AWS_NAMESPACE, IssuerKind};

/// The registered JWT claims (RFC 7519 §4.1): known for every kind.
pub const STANDARD_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The claim names a kind's tokens can carry: exact top-level names and prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownClaims {
    /// Exact top-level names, besides [`STANDARD_CLAIMS`].
    pub names: &'static [&'static str],
    /// Top-level names starting with one of these are known too (platform-defined
    /// families such as GitHub's `repo_property_`).
    pub prefixes: &'static [&'static str],
    /// Keys nested under a top-level object claim, as `(object, key)`: only for
    /// suggestions (a rule writing `claims.namespace` is pointed to
    /// `["kubernetes.io"].namespace`).
    pub nested: &'static [(&'static str, &'static str)],
}

const GITHUB_ACTIONS: KnownClaims = KnownClaims {
    names: &[
        "actor",
        "actor_id",
        "base_ref",
        "check_run_id",
        "enterprise",
        "enterprise_id",
        "environment",
        "event_name",
        "head_ref",
        "job_workflow_ref",
        "job_workflow_sha",
        "ref",
        "ref_protected",
        "ref_type",
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "repository_visibility",
        "run_attempt",
        "run_id",
        "run_number",
        "runner_environment",
        "sha",
        "workflow",
        "workflow_ref",
        "workflow_sha",
    ],
    prefixes: &["repo_property_"],
    nested: &[],
};

const GITLAB: KnownClaims = KnownClaims {
    names: &[
        "namespace_id",
        "namespace_path",
        "project_id",
        "project_path",
        "job_namespace_id",
        "job_namespace_path",
        "job_project_id",
        "job_project_path",
        "user_id",
        "user_login",
        "user_email",
        "user_access_level",
        "user_identities",
        "pipeline_id",
        "pipeline_source",
        "job_id",
        "ref",
        "ref_type",
        "ref_path",
        "ref_protected",
        "groups_direct",
        "environment",
        "environment_protected",
        "environment_action",
        "deployment_tier",
        "runner_id",
        "runner_environment",
        "sha",
        "project_visibility",
        "ci_config_ref_uri",
        "ci_config_sha",
        "target_audience",
    ],
    prefixes: &[],
    nested: &[],
};

const KUBERNETES: KnownClaims = KnownClaims {
    names: &["kubernetes.io"],
    prefixes: &[],
    nested: &[
        ("kubernetes.io", "namespace"),
        ("kubernetes.io", "serviceaccount"),
        ("kubernetes.io", "pod"),
        ("kubernetes.io", "node"),
        ("kubernetes.io", "secret"),
        ("kubernetes.io", "warnafter"),
    ],
};

const AZURE_ENTRA: KnownClaims = KnownClaims {
    names: &[
        "_claim_names",
        "_claim_sources",
        "acct",
        "acr",
        "acrs",
        "aio",
        "altsecid",
        "amr",
        "app_displayname",
        "appid",
        "appidacr",
        "at_hash",
        "auth_time",
        "azp",
        "azpacr",
        "c_hash",
        "cnf",
        "ctry",
        "deviceid",
        "email",
        "enfpolids",
        "family_name",
        "fwd",
        "given_name",
        "groups",
        "hasgroups",
        "idp",
        "idtyp",
        "in_corp",
        "ipaddr",
        "login_hint",
        "name",
        "nickname",
        "nonce",
        "oid",
        "onprem_sid",
        "platf",
        "preferred_username",
        "puid",
        "pwd_exp",
        "pwd_url",
        "rh",
        "roles",
        "scp",
        "sid",
        "tenant_ctry",
        "tenant_region_scope",
        "tid",
        "unique_name",
        "upn",
        "uti",
        "ver",
        "verified_primary_email",
        "verified_secondary_email",
        "vnet",
        "wids",
        "ztdid",
    ],
    prefixes: &["xms_", "extn.", "extension_"],
    nested: &[],
};

const GOOGLE: KnownClaims = KnownClaims {
    names: &[
        "at_hash",
        "auth_time",
        "azp",
        "email",
        "email_verified",
        "family_name",
        "given_name",
        "google",
        "hd",
        "locale",
        "name",
        "nonce",
        "picture",
        "profile",
    ],
    prefixes: &[],
    nested: &[("google", "compute_engine")],
};

const SPIFFE: KnownClaims = KnownClaims {
    names: &[],
    prefixes: &[],
    nested: &[],
};

const AWS_OUTBOUND: KnownClaims = KnownClaims {
    names: &[AWS_NAMESPACE],
    prefixes: &[],
    nested: &[
        (AWS_NAMESPACE, "aws_account"),
        (AWS_NAMESPACE, "source_region"),
        (AWS_NAMESPACE, "org_id"),
        (AWS_NAMESPACE, "ou_path"),
        (AWS_NAMESPACE, "principal_tags"),
        (AWS_NAMESPACE, "request_tags"),
        (AWS_NAMESPACE, "lambda_source_function_arn"),
    ],
};

const AWS_IAM: KnownClaims = KnownClaims {
    names: &["arn", "account", "user_id", "role_name", "session_name"],
    prefixes: &[],
    nested: &[],
};

impl IssuerKind {
    /// The claim names this kind's tokens can carry; `None` for `generic`, whose
    /// tokens may carry anything.
    pub fn known_claims(self) -> Option<&'static KnownClaims> {
        Some(match self {
            IssuerKind::Generic => return None,
            IssuerKind::GithubActions => &GITHUB_ACTIONS,
            IssuerKind::Gitlab => &GITLAB,
            IssuerKind::Kubernetes | IssuerKind::Eks | IssuerKind::Gke | IssuerKind::Aks => &KUBERNETES,
            IssuerKind::AzureEntra => &AZURE_ENTRA,
            IssuerKind::Google => &GOOGLE,
            IssuerKind::Spiffe => &SPIFFE,
            IssuerKind::AwsOutbound => &AWS_OUTBOUND,
            IssuerKind::AwsIam => &AWS_IAM,
        })
    }
}

impl KnownClaims {
    /// Whether tokens of the kind can carry the top-level claim `name`.
    pub fn contains(&self, name: &str) -> bool {
        STANDARD_CLAIMS.contains(&name)
            || self.names.contains(&name)
            || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Every exact top-level name: the standard claims, then the kind's.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        STANDARD_CLAIMS.iter().chain(self.names).copied()
    }

    /// The known claim nearest to `name` (an unknown top-level name), written as a
    /// claim path relative to the claims (`repository`, `["kubernetes.io"].namespace`),
    /// or `None` when nothing is close. Close means an edit distance (Damerau-Levenshtein,
    /// ASCII case ignored) of at most a third of the name's length (at least 1); a name
    /// that is exactly a key nested under one of the kind's object claims points there.
    pub fn nearest(&self, name: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        if let Some((object, key)) = self.nested.iter().find(|(_, key)| *key == lower) {
            return Some(format!("[\"{object}\"].{key}"));
        }
        let limit = (name.chars().count() / 3).max(1);
        let mut best: Option<(usize, &str)> = None;
        for candidate in self.names() {
            let distance = strsim::damerau_levenshtein(&lower, &candidate.to_ascii_lowercase());
            if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, candidate));
            }
        }
        best.map(|(_, candidate)| written(candidate))
    }
}

/// A top-level claim name as a rule writes it: bare when it is a plain key, else in
/// brackets (`["kubernetes.io"]`).
fn written(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("[\"{}\"]", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn generic_issuers_have_no_list() {
        assert_eq!(IssuerKind::Generic.known_claims(), None);
        for kind in IssuerKind::ALL {
            if kind != IssuerKind::Generic {
                assert!(kind.known_claims().is_some(), "{kind}");
            }
        }
    }

    #[test]
    fn every_claim_of_every_kinds_fixture_is_known() {
        let fixtures = [
            (
                IssuerKind::GithubActions,
                include_str!("../tests/fixtures/kinds/github-actions.json"),
            ),
            (
                IssuerKind::Gitlab,
                include_str!("../tests/fixtures/kinds/gitlab.json"),
            ),
            (
                IssuerKind::Kubernetes,
                include_str!("../tests/fixtures/kinds/kubernetes.json"),
            ),
            (IssuerKind::Eks, include_str!("../tests/fixtures/kinds/eks.json")),
            (IssuerKind::Gke, include_str!("../tests/fixtures/kinds/gke.json")),
            (IssuerKind::Aks, include_str!("../tests/fixtures/kinds/aks.json")),
            (
                IssuerKind::AzureEntra,
                include_str!("../tests/fixtures/kinds/azure-entra.json"),
            ),
            (
                IssuerKind::Google,
                include_str!("../tests/fixtures/kinds/google.json"),
            ),
            (
                IssuerKind::AwsOutbound,
                include_str!("../tests/fixtures/kinds/aws-outbound.json"),
            ),
            (
                IssuerKind::Spiffe,
                include_str!("../tests/fixtures/kinds/spiffe.json"),
            ),
        ];
        for (kind, text) in fixtures {
            let claims: Value = serde_json::from_str(text).expect("fixture is JSON");
            let known = kind.known_claims().expect("a list");
            for name in claims.as_object().expect("object").keys() {
                assert!(known.contains(name), "{kind}: {name}");
            }
        }
        // aws-iam: what the broker makes from STS's answer, for an assumed role.
        let identity = crate::aws_iam::CallerIdentity {
            arn: "arn:aws:sts::123456789012:assumed-role/reader/build-42".into(),
            account: "123456789012".into(),
            user_id: "AROAEXAMPLE:build-42".into(),
        };
        let known = IssuerKind::AwsIam.known_claims().expect("a list");
        for name in identity.claims("aws-iam:prod").keys() {
            assert!(known.contains(name), "aws-iam: {name}");
        }
    }

    #[test]
    fn standard_claims_and_prefixes_are_known() {
        for kind in IssuerKind::ALL {
            if let Some(known) = kind.known_claims() {
                for name in STANDARD_CLAIMS {
                    assert!(known.contains(name), "{kind}: {name}");
                }
            }
        }
        let gha = IssuerKind::GithubActions.known_claims().expect("a list");
        assert!(gha.contains("repo_property_team"));
        assert!(!gha.contains("repositry"));
        let entra = IssuerKind::AzureEntra.known_claims().expect("a list");
        assert!(entra.contains("xms_mirid") && entra.contains("extn.department"));
        let spiffe = IssuerKind::Spiffe.known_claims().expect("a list");
        assert!(!spiffe.contains("email"));
    }

    #[test]
    fn the_nearest_known_name_is_suggested() {
        let gha = IssuerKind::GithubActions.known_claims().expect("a list");
        assert_eq!(gha.nearest("repositry").as_deref(), Some("repository"));
        assert_eq!(gha.nearest("Repository").as_deref(), Some("repository"));
        assert_eq!(gha.nearest("repostiory").as_deref(), Some("repository"));
        assert_eq!(gha.nearest("enviroment").as_deref(), Some("environment"));
        assert_eq!(gha.nearest("job_workflow").as_deref(), Some("job_workflow_ref"));
        assert_eq!(gha.nearest("x"), None);
        assert_eq!(gha.nearest("team"), None);
        let k8s = IssuerKind::Gke.known_claims().expect("a list");
        assert_eq!(
            k8s.nearest("namespace").as_deref(),
            Some("[\"kubernetes.io\"].namespace")
        );
        assert_eq!(k8s.nearest("kubernetes").as_deref(), Some("[\"kubernetes.io\"]"));
        let aws = IssuerKind::AwsOutbound.known_claims().expect("a list");
        assert_eq!(
            aws.nearest("aws_account").as_deref(),
            Some("[\"https://sts.amazonaws.com/\"].aws_account")
        );
    }
}
