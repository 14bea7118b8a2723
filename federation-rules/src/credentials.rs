//! `issue.credentials` (contract §9): which cloud the issued token is traded at, and
//! with what parameters. Compiled with the rule; rendered per request into
//! [`Credentials`], which the broker sends to the cloud and `explain` shows.
//!
//! Role ARNs, session names, audiences, service accounts, tenant and client IDs and
//! Azure scopes are templates; endpoints, regions, lifetimes and CA files are fixed text,
//! so that no claim of a presented token can choose where the broker sends a token.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::duration::{format_duration, parse_duration};
use crate::raw::{RawAwsCredentials, RawAzureCredentials, RawCredentials, RawGcpCredentials};
use crate::template::{RenderError, Template};

/// AWS accepts role sessions of 15 minutes to 12 hours; one hour unless the rule says.
pub const AWS_DURATION: (u64, u64, u64) = (900, 43_200, 3600);
/// A Google access token from `generateAccessToken`: up to 12 hours (more than one
/// needs Google's lifetime-extension policy on the service account); one hour unless the
/// rule says.
pub const GCP_LIFETIME: (u64, u64, u64) = (60, 43_200, 3600);
/// Google's scope when a rule names none.
pub const GCP_DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GCP_STS_ENDPOINT: &str = "https://sts.googleapis.com";
pub const GCP_IAMCREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
pub const AZURE_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The longest AWS role session name, and the shortest.
pub const AWS_SESSION_NAME_CHARS: (usize, usize) = (2, 64);

/// Which cloud a [`Credentials`] block is for; also names the `requested_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the broker reaches a cloud's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointTrust {
    /// `http://` endpoints allowed (`danger_allow_insecure_endpoint`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub danger_allow_insecure_endpoint: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A rule's credentials block, rendered for one request: what the broker asks the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cloud", rename_all = "lowercase")]
pub enum Credentials {
    Aws(AwsCredentials),
    Gcp(GcpCredentials),
    Azure(AzureCredentials),
}

impl Credentials {
    pub fn cloud(&self) -> Cloud {
        match self {
            Credentials::Aws(_) => Cloud::Aws,
            Credentials::Gcp(_) => Cloud::Gcp,
            Credentials::Azure(_) => Cloud::Azure,
        }
    }

    pub fn trust(&self) -> &EndpointTrust {
        match self {
            Credentials::Aws(c) => &c.trust,
            Credentials::Gcp(c) => &c.trust,
            Credentials::Azure(c) => &c.trust,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsCredentials {
    pub role_arn: String,
    pub session_name: String,
    /// Seconds.
    pub duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(flatten)]
    pub trust: EndpointTrust,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcpCredentials {
    pub audience: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    /// Seconds; of the impersonated service account's token.
    pub lifetime: u64,
    pub sts_endpoint: String,
    pub iamcredentials_endpoint: String,
    #[serde(flatten)]
    pub trust: EndpointTrust,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub scope: String,
    pub authority_host: String,
    #[serde(flatten)]
    pub trust: EndpointTrust,
}

/// A compiled credentials block.
#[derive(Debug, Clone)]
pub(crate) enum CredentialsSpec {
    Aws {
        role_arn: Template,
        session_name: Template,
        duration: u64,
        region: Option<String>,
        endpoint: Option<String>,
        trust: EndpointTrust,
    },
    Gcp {
        audience: Template,
        service_account: Option<Template>,
        scopes: Vec<String>,
        lifetime: u64,
        sts_endpoint: String,
        iamcredentials_endpoint: String,
        trust: EndpointTrust,
    },
    Azure {
        tenant_id: Template,
        client_id: Template,
        scope: Template,
        authority_host: String,
        trust: EndpointTrust,
    },
}

/// Why a credentials block cannot be rendered for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CredentialsError {
    #[error("{field} cannot be rendered: {} {}", .error.placeholder, .error.problem)]
    Render { field: String, error: RenderError },
    #[error(
        "issue.credentials.aws.session_name rendered to {shown}, which AWS refuses: a session name is 2 to 64 characters of letters, digits and _+=,.@-"
    )]
    SessionName { shown: String },
    #[error("the issued sub is {0} bytes; Google accepts at most {GCP_SUBJECT_BYTES} as google.subject")]
    GcpSubject(usize),
    #[error("issue.claims.{AWS_TAGS_CLAIM}: {0} (AWS refuses such a token)")]
    AwsTags(String),
}

/// The claim AWS reads session tags from.
pub const AWS_TAGS_CLAIM: &str = "https://aws.amazon.com/tags";
/// Google's limit on `google.subject` (the issued `sub`), in bytes.
pub const GCP_SUBJECT_BYTES: usize = 127;
/// AWS's session tag limits: tags, key characters, value characters.
pub const AWS_TAG_LIMITS: (usize, usize, usize) = (50, 128, 256);

/// What AWS demands of the session tags in a web identity token
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html>): at most 50
/// principal tags, keys of 1–128 characters, values of at most 256, each value one
/// string (or a one-string list), and transitive keys among the tags.
pub(crate) fn check_aws_tags(claims: &Map<String, Value>) -> Result<(), CredentialsError> {
    let Some(tags) = claims.get(AWS_TAGS_CLAIM) else {
        return Ok(());
    };
    let bad = |message: String| Err(CredentialsError::AwsTags(message));
    let Some(principal) = tags.get("principal_tags").and_then(Value::as_object) else {
        return bad("must be an object with a principal_tags object".into());
    };
    let (max_tags, max_key, max_value) = AWS_TAG_LIMITS;
    if principal.len() > max_tags {
        return bad(format!(
            "{} principal tags; AWS accepts at most {max_tags}",
            principal.len()
        ));
    }
    for (key, value) in principal {
        let chars = key.chars().count();
        if chars == 0 || chars > max_key {
            return bad(format!(
                "tag key of {chars} characters; AWS accepts 1 to {max_key}"
            ));
        }
        let text = match value {
            Value::String(s) => Some(s.as_str()),
            Value::Array(items) if items.len() == 1 => items[0].as_str(),
            _ => None,
        };
        match text {
            None => return bad(format!("tag `{key}` must be one string")),
            Some(t) if t.chars().count() > max_value => {
                return bad(format!(
                    "tag `{key}` has a value of {} characters; AWS accepts at most {max_value}",
                    t.chars().count()
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(transitive) = tags.get("transitive_tag_keys") {
        let keys = transitive.as_array().map(Vec::as_slice).unwrap_or_default();
        if !transitive.is_array()
            || keys
                .iter()
                .any(|k| k.as_str().is_none_or(|k| !principal.contains_key(k)))
        {
            return bad("transitive_tag_keys must list keys of principal_tags".into());
        }
    }
    Ok(())
}

impl CredentialsSpec {
    /// Whether the issued `sub` fits the cloud (Google's 127 bytes).
    pub(crate) fn check_subject(&self, subject: &str) -> Result<(), CredentialsError> {
        match self {
            CredentialsSpec::Gcp { .. } if subject.len() > GCP_SUBJECT_BYTES => {
                Err(CredentialsError::GcpSubject(subject.len()))
            }
            _ => Ok(()),
        }
    }

    /// The cloud of the block.
    pub(crate) fn cloud(&self) -> Cloud {
        match self {
            CredentialsSpec::Aws { .. } => Cloud::Aws,
            CredentialsSpec::Gcp { .. } => Cloud::Gcp,
            CredentialsSpec::Azure { .. } => Cloud::Azure,
        }
    }

    /// The block for one request's claims.
    pub(crate) fn render(&self, claims: &Map<String, Value>) -> Result<Credentials, CredentialsError> {
        let render = |field: &str, template: &Template| {
            template.render(claims).map_err(|error| CredentialsError::Render {
                field: field.to_owned(),
                error,
            })
        };
        Ok(match self {
            CredentialsSpec::Aws {
                role_arn,
                session_name,
                duration,
                region,
                endpoint,
                trust,
            } => {
                let session_name = render("issue.credentials.aws.session_name", session_name)?;
                if !valid_session_name(&session_name) {
                    return Err(CredentialsError::SessionName {
                        shown: shown(&session_name),
                    });
                }
                Credentials::Aws(AwsCredentials {
                    role_arn: render("issue.credentials.aws.role_arn", role_arn)?,
                    session_name,
                    duration: *duration,
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    trust: trust.clone(),
                })
            }
            CredentialsSpec::Gcp {
                audience,
                service_account,
                scopes,
                lifetime,
                sts_endpoint,
                iamcredentials_endpoint,
                trust,
            } => Credentials::Gcp(GcpCredentials {
                audience: render("issue.credentials.gcp.audience", audience)?,
                service_account: service_account
                    .as_ref()
                    .map(|sa| render("issue.credentials.gcp.service_account", sa))
                    .transpose()?,
                scopes: scopes.clone(),
                lifetime: *lifetime,
                sts_endpoint: sts_endpoint.clone(),
                iamcredentials_endpoint: iamcredentials_endpoint.clone(),
                trust: trust.clone(),
            }),
            CredentialsSpec::Azure {
                tenant_id,
                client_id,
                scope,
                authority_host,
                trust,
            } => Credentials::Azure(AzureCredentials {
                tenant_id: render("issue.credentials.azure.tenant_id", tenant_id)?,
                client_id: render("issue.credentials.azure.client_id", client_id)?,
                scope: render("issue.credentials.azure.scope", scope)?,
                authority_host: authority_host.clone(),
                trust: trust.clone(),
            }),
        })
    }
}

impl crate::RuleSet {
    /// The rules with an `issue.credentials` block and its cloud, in input order.
    pub fn credential_clouds(&self) -> Vec<(&str, Cloud)> {
        self.rules
            .iter()
            .filter_map(|r| {
                let spec = r.issue.as_ref()?.credentials.as_ref()?;
                Some((&*r.name, spec.cloud()))
            })
            .collect()
    }
}

/// A session name as the audit line shows it: quoted, at most 80 characters.
fn shown(name: &str) -> String {
    let count = name.chars().count();
    if count > 80 {
        let cut: String = name.chars().take(80).collect();
        format!("{cut:?}… ({count} characters)")
    } else {
        format!("{name:?} ({count} characters)")
    }
}

/// AWS's `RoleSessionName`: `[\w+=,.@-]{2,64}`.
pub fn valid_session_name(name: &str) -> bool {
    let (min, max) = AWS_SESSION_NAME_CHARS;
    (min..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// Compiles `issue.credentials`; problems go to `push(field, message)`.
pub(crate) fn compile(raw: RawCredentials, push: &mut dyn FnMut(&str, String)) -> Option<CredentialsSpec> {
    let RawCredentials { aws, gcp, azure } = raw;
    let named = [aws.is_some(), gcp.is_some(), azure.is_some()]
        .into_iter()
        .filter(|b| *b)
        .count();
    if named != 1 {
        push(
            "issue.credentials",
            format!("must name exactly one cloud (aws, gcp or azure), not {named}"),
        );
        return None;
    }
    let mut c = Compiler { push, ok: true };
    let spec = if let Some(raw) = aws {
        c.aws(raw)
    } else if let Some(raw) = gcp {
        c.gcp(raw)
    } else {
        c.azure(azure?)
    };
    c.ok.then_some(spec)
}

struct Compiler<'a> {
    push: &'a mut dyn FnMut(&str, String),
    ok: bool,
}

impl Compiler<'_> {
    fn error(&mut self, field: &str, message: impl std::fmt::Display) {
        self.ok = false;
        (self.push)(field, message.to_string());
    }

    fn template(&mut self, field: &str, text: &str) -> Template {
        if text.is_empty() {
            self.error(field, "must not be empty");
            return Template::default();
        }
        Template::parse(text).unwrap_or_else(|e| {
            self.error(field, e);
            Template::default()
        })
    }

    /// A duration within `(min, max, default)` seconds.
    fn duration(&mut self, field: &str, text: Option<&str>, (min, max, default): (u64, u64, u64)) -> u64 {
        let Some(text) = text else { return default };
        match parse_duration(text) {
            Err(e) => {
                self.error(field, e);
                default
            }
            Ok(seconds) if !(min..=max).contains(&seconds) => {
                self.error(
                    field,
                    format!(
                        "must be between {} and {}, not {}",
                        format_duration(min),
                        format_duration(max),
                        format_duration(seconds)
                    ),
                );
                default
            }
            Ok(seconds) => seconds,
        }
    }

    /// An endpoint: an absolute `https://` URL (or `http://` with
    /// `danger_allow_insecure_endpoint`), without query or fragment; kept without a
    /// trailing `/`.
    fn endpoint(&mut self, field: &str, text: &str, insecure: bool) -> String {
        let scheme_ok = match text.split_once("://") {
            Some(("https", _)) => true,
            Some(("http", _)) => insecure,
            _ => false,
        };
        let rest = text.split_once("://").map_or("", |(_, rest)| rest);
        let host = rest.split('/').next().unwrap_or_default();
        if !scheme_ok {
            self.error(
                field,
                format!("`{text}` must be an https:// URL (http:// only with danger_allow_insecure_endpoint: true)"),
            );
        } else if host.is_empty() || host.contains('@') || rest.contains(['?', '#', ' ']) {
            self.error(
                field,
                format!("`{text}` must be a URL with a host and without user info, query or fragment"),
            );
        }
        text.trim_end_matches('/').to_owned()
    }

    fn trust(&mut self, cloud: &str, insecure: bool, ca_file: Option<String>) -> EndpointTrust {
        if ca_file.as_deref() == Some("") {
            self.error(&format!("issue.credentials.{cloud}.ca_file"), "must not be empty");
        }
        EndpointTrust {
            danger_allow_insecure_endpoint: insecure,
            ca_file,
        }
    }

    fn aws(&mut self, raw: RawAwsCredentials) -> CredentialsSpec {
        let insecure = raw.danger_allow_insecure_endpoint;
        let region = raw.region.filter(|r| {
            let ok = !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                self.error(
                    "issue.credentials.aws.region",
                    format!("`{r}` is not an AWS region name"),
                );
            }
            ok
        });
        let session_name = self.template("issue.credentials.aws.session_name", &raw.session_name);
        self.session_name_literals(&session_name);
        CredentialsSpec::Aws {
            role_arn: self.template("issue.credentials.aws.role_arn", &raw.role_arn),
            session_name,
            duration: self.duration(
                "issue.credentials.aws.duration",
                raw.duration.as_deref(),
                AWS_DURATION,
            ),
            region,
            endpoint: raw
                .endpoint
                .map(|e| self.endpoint("issue.credentials.aws.endpoint", &e, insecure)),
            trust: self.trust("aws", insecure, raw.ca_file),
        }
    }

    /// A session name whose literal text AWS would always refuse is an error, not a
    /// denial of every request.
    fn session_name_literals(&mut self, template: &Template) {
        let parts = template.parts();
        if parts.is_empty() {
            return; // not parsed: already an error
        }
        let literal: String = parts.iter().flatten().copied().collect();
        let placeholders = parts.iter().filter(|p| p.is_none()).count();
        let (min, max) = AWS_SESSION_NAME_CHARS;
        let bad_char = literal
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c)));
        let field = "issue.credentials.aws.session_name";
        if let Some(c) = bad_char {
            self.error(
                field,
                format!("{c:?} is not allowed in an AWS session name (letters, digits and _+=,.@- only)"),
            );
        } else if literal.len() > max || (placeholders == 0 && literal.len() < min) {
            self.error(
                field,
                format!(
                    "an AWS session name is {min} to {max} characters, not {}",
                    literal.len()
                ),
            );
        }
    }

    fn gcp(&mut self, raw: RawGcpCredentials) -> CredentialsSpec {
        let insecure = raw.danger_allow_insecure_endpoint;
        if raw.service_account.is_none() && raw.lifetime.is_some() {
            self.error(
                "issue.credentials.gcp.lifetime",
                "applies to an impersonated service account's token: set service_account too (a federated token's lifetime is Google's)",
            );
        }
        if let Some(scope) = raw.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            self.error(
                "issue.credentials.gcp.scopes",
                format!("{scope:?} is not a scope (no spaces, not empty)"),
            );
        }
        let scopes = if raw.scopes.is_empty() {
            vec![GCP_DEFAULT_SCOPE.to_owned()]
        } else {
            raw.scopes
        };
        CredentialsSpec::Gcp {
            audience: self.template("issue.credentials.gcp.audience", &raw.audience),
            service_account: raw
                .service_account
                .map(|sa| self.template("issue.credentials.gcp.service_account", &sa)),
            scopes,
            lifetime: self.duration(
                "issue.credentials.gcp.lifetime",
                raw.lifetime.as_deref(),
                GCP_LIFETIME,
            ),
            sts_endpoint: self.endpoint(
                "issue.credentials.gcp.sts_endpoint",
                raw.sts_endpoint.as_deref().unwrap_or(GCP_STS_ENDPOINT),
                insecure,
            ),
            iamcredentials_endpoint: self.endpoint(
                "issue.credentials.gcp.iamcredentials_endpoint",
                raw.iamcredentials_endpoint
                    .as_deref()
                    .unwrap_or(GCP_IAMCREDENTIALS_ENDPOINT),
                insecure,
            ),
            trust: self.trust("gcp", insecure, raw.ca_file),
        }
    }

    fn azure(&mut self, raw: RawAzureCredentials) -> CredentialsSpec {
        let insecure = raw.danger_allow_insecure_endpoint;
        if !raw.scope.ends_with("/.default") {
            self.error(
                "issue.credentials.azure.scope",
                format!(
                    "`{}` must end in `/.default` (the client-credentials flow asks for a resource's application permissions)",
                    raw.scope
                ),
            );
        }
        CredentialsSpec::Azure {
            tenant_id: self.template("issue.credentials.azure.tenant_id", &raw.tenant_id),
            client_id: self.template("issue.credentials.azure.client_id", &raw.client_id),
            scope: self.template("issue.credentials.azure.scope", &raw.scope),
            authority_host: self.endpoint(
                "issue.credentials.azure.authority_host",
                raw.authority_host.as_deref().unwrap_or(AZURE_AUTHORITY_HOST),
                insecure,
            ),
            trust: self.trust("azure", insecure, raw.ca_file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Decision;
    use crate::test_support::{Req, try_compile};
    use serde_json::json;

    fn rule(credentials: Value) -> Value {
        json!([{"name": "r", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": ["sts.amazonaws.com"]},
                "issue": {"subject": "gha:{claims.repository}", "credentials": credentials}}])
    }

    fn compile_errors(credentials: Value) -> Vec<String> {
        match try_compile(rule(credentials)) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        }
    }

    fn decide(credentials: Value, claims: Value) -> Decision {
        let set = try_compile(rule(credentials)).expect("compiles");
        let req = Req::new("github-actions", claims, &["sts.amazonaws.com"]);
        set.evaluate(&req.request())
    }

    fn aws(extra: Value) -> Value {
        let mut block = json!({"role_arn": "arn:aws:iam::111122223333:role/deployer", "session_name": "gha-{claims.run_id}"});
        if let (Value::Object(b), Value::Object(extra)) = (&mut block, extra) {
            b.extend(extra);
        }
        json!({"aws": block})
    }

    #[test]
    fn aws_renders_with_defaults() {
        let decision = decide(
            aws(json!({})),
            json!({"sub": "s", "repository": "acme/api", "run_id": 42}),
        );
        let Decision::Allow(grant) = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(
            grant.credentials,
            Some(Box::new(Credentials::Aws(AwsCredentials {
                role_arn: "arn:aws:iam::111122223333:role/deployer".into(),
                session_name: "gha-42".into(),
                duration: 3600,
                region: None,
                endpoint: None,
                trust: EndpointTrust {
                    danger_allow_insecure_endpoint: false,
                    ca_file: None
                },
            })))
        );
        assert_eq!(
            serde_json::to_value(grant.credentials).unwrap_or_default(),
            json!({"cloud": "aws", "role_arn": "arn:aws:iam::111122223333:role/deployer", "session_name": "gha-42", "duration": 3600})
        );
    }

    #[test]
    fn a_session_name_aws_refuses_denies_the_request() {
        for run_id in [json!("x".repeat(61)), json!("a b"), json!("a/b")] {
            let decision = decide(
                aws(json!({})),
                json!({"sub": "s", "repository": "acme/api", "run_id": run_id}),
            );
            let Decision::Deny(denial) = decision else {
                panic!("allowed {run_id}")
            };
            assert!(
                denial
                    .reason
                    .contains("issue.credentials.aws.session_name rendered to"),
                "{}",
                denial.reason
            );
        }
        // 64 characters exactly is fine.
        let decision = decide(
            aws(json!({})),
            json!({"sub": "s", "repository": "acme/api", "run_id": "x".repeat(60)}),
        );
        assert!(decision.is_allow(), "{decision:?}");
        let decision = decide(aws(json!({})), json!({"sub": "s", "repository": "acme/api"}));
        let Decision::Deny(denial) = decision else {
            panic!("allowed without run_id")
        };
        assert!(
            denial.reason.contains("claims.run_id is missing"),
            "{}",
            denial.reason
        );
    }

    #[test]
    fn gcp_and_azure_render_with_defaults() {
        let gcp = json!({"gcp": {"audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/{claims.repository_owner}",
                                  "service_account": "deployer@proj.iam.gserviceaccount.com"}});
        let Decision::Allow(grant) =
            decide(gcp, json!({"repository": "acme/api", "repository_owner": "acme"}))
        else {
            panic!("gcp denied")
        };
        let Some(Credentials::Gcp(g)) = grant.credentials.map(|c| *c) else {
            panic!()
        };
        assert!(g.audience.ends_with("/providers/acme"));
        assert_eq!(g.scopes, [GCP_DEFAULT_SCOPE]);
        assert_eq!((g.lifetime, g.sts_endpoint.as_str()), (3600, GCP_STS_ENDPOINT));
        assert_eq!(g.iamcredentials_endpoint, GCP_IAMCREDENTIALS_ENDPOINT);

        let azure = json!({"azure": {"tenant_id": "t", "client_id": "c", "scope": "https://management.azure.com/.default",
                                      "authority_host": "http://127.0.0.1:9/", "danger_allow_insecure_endpoint": "true"}});
        let Decision::Allow(grant) = decide(azure, json!({"repository": "acme/api"})) else {
            panic!("azure denied")
        };
        let Some(Credentials::Azure(a)) = grant.credentials.map(|c| *c) else {
            panic!()
        };
        assert_eq!(a.authority_host, "http://127.0.0.1:9");
        assert!(a.trust.danger_allow_insecure_endpoint);
    }

    #[test]
    fn compile_errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({}),
                "issue.credentials: must name exactly one cloud (aws, gcp or azure), not 0",
            ),
            (
                json!({"aws": {"role_arn": "a", "session_name": "ab"}, "azure": {"tenant_id": "t", "client_id": "c", "scope": "s/.default"}}),
                "issue.credentials: must name exactly one cloud (aws, gcp or azure), not 2",
            ),
            (
                aws(json!({"duration": "10m"})),
                "issue.credentials.aws.duration: must be between 15m and 12h, not 10m",
            ),
            (
                aws(json!({"duration": "13h"})),
                "issue.credentials.aws.duration: must be between 15m and 12h, not 13h",
            ),
            (
                aws(json!({"endpoint": "http://127.0.0.1:5000"})),
                "issue.credentials.aws.endpoint: `http://127.0.0.1:5000` must be an https:// URL (http:// only with danger_allow_insecure_endpoint: true)",
            ),
            (
                aws(json!({"endpoint": "https://sts.amazonaws.com/?x=1"})),
                "issue.credentials.aws.endpoint: `https://sts.amazonaws.com/?x=1` must be a URL with a host and without user info, query or fragment",
            ),
            (
                aws(json!({"region": "us east"})),
                "issue.credentials.aws.region: `us east` is not an AWS region name",
            ),
            (
                aws(json!({"session_name": "gha/{claims.run_id}"})),
                "issue.credentials.aws.session_name: '/' is not allowed in an AWS session name (letters, digits and _+=,.@- only)",
            ),
            (
                aws(json!({"session_name": "x"})),
                "issue.credentials.aws.session_name: an AWS session name is 2 to 64 characters, not 1",
            ),
            (
                aws(json!({"role_arn": "{claims"})),
                "issue.credentials.aws.role_arn: `{claims}` needs a claim path, e.g. `{claims.repository}` (in template `{claims`)",
            ),
            (
                json!({"gcp": {"audience": "//iam", "lifetime": "1h"}}),
                "issue.credentials.gcp.lifetime: applies to an impersonated service account's token: set service_account too (a federated token's lifetime is Google's)",
            ),
            (
                json!({"azure": {"tenant_id": "t", "client_id": "c", "scope": "https://management.azure.com"}}),
                "issue.credentials.azure.scope: `https://management.azure.com` must end in `/.default` (the client-credentials flow asks for a resource's application permissions)",
            ),
        ];
        for (block, expected) in cases {
            assert_eq!(compile_errors(block.clone()), [expected], "{block}");
        }
        assert_eq!(
            compile_errors(aws(
                json!({"endpoint": "http://127.0.0.1:5000", "danger_allow_insecure_endpoint": true})
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn session_names() {
        for ok in ["ab", "gha-1_2+3=4,5.6@7", &"x".repeat(64)] {
            assert!(valid_session_name(ok), "{ok}");
        }
        for bad in ["a", "", &"x".repeat(65), "a b", "é1", "a:b"] {
            assert!(!valid_session_name(bad), "{bad}");
        }
    }

    #[test]
    fn cloud_limit_warnings() {
        let set = try_compile(rule(aws(json!({})))).expect("compiles");
        let warnings = set.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            (warnings[0].kind, warnings[0].target.as_str()),
            ("cloud_limit", "issue.credentials.aws.session_name")
        );
        let fixed = try_compile(rule(aws(json!({"session_name": "deploy"})))).expect("compiles");
        assert!(fixed.warnings().is_empty());
        let gcp = try_compile(rule(json!({"gcp": {"audience": "//iam"}}))).expect("compiles");
        assert_eq!(gcp.warnings()[0].target, "issue.subject");
    }

    #[test]
    fn aws_session_tags_beyond_aws_limits_deny() {
        let tags = |principal: Value, transitive: Value| {
            let mut m = Map::new();
            m.insert(
                AWS_TAGS_CLAIM.into(),
                json!({"principal_tags": principal, "transitive_tag_keys": transitive}),
            );
            check_aws_tags(&m).map_err(|e| e.to_string())
        };
        assert_eq!(tags(json!({"repo": ["acme/api"]}), json!(["repo"])), Ok(()));
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(["v"]))).collect();
        let cases = [
            (
                Value::Object(many),
                json!([]),
                "51 principal tags; AWS accepts at most 50",
            ),
            (
                json!({"k".repeat(129): ["v"]}),
                json!([]),
                "tag key of 129 characters; AWS accepts 1 to 128",
            ),
            (
                json!({"k": ["v".repeat(257)]}),
                json!([]),
                "tag `k` has a value of 257 characters; AWS accepts at most 256",
            ),
            (json!({"k": ["a", "b"]}), json!([]), "tag `k` must be one string"),
            (
                json!({"k": ["v"]}),
                json!(["other"]),
                "transitive_tag_keys must list keys of principal_tags",
            ),
        ];
        for (principal, transitive, expected) in cases {
            let err = tags(principal, transitive).expect_err(expected);
            assert!(err.contains(expected), "{err}");
        }
        // Through a rule: the request is denied with the reason.
        let set = try_compile(json!([{"name": "r", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": ["sts.amazonaws.com"]},
            "issue": {"claims": {AWS_TAGS_CLAIM: {"principal_tags": {"repo": ["{claims.repository}"]}}}}}]))
        .expect("compiles");
        let req = Req::new(
            "github-actions",
            json!({"sub": "s", "repository": "x".repeat(300)}),
            &["sts.amazonaws.com"],
        );
        let Decision::Deny(denial) = set.evaluate(&req.request()) else {
            panic!("allowed")
        };
        assert!(
            denial.reason.contains("AWS refuses such a token"),
            "{}",
            denial.reason
        );
    }

    #[test]
    fn a_gcp_subject_over_127_bytes_denies() {
        let gcp = json!({"gcp": {"audience": "//iam"}});
        let ok = decide(gcp.clone(), json!({"repository": "a".repeat(123)}));
        assert!(ok.is_allow(), "127 bytes: {ok:?}");
        let Decision::Deny(denial) = decide(gcp, json!({"repository": "a".repeat(124)})) else {
            panic!("allowed")
        };
        assert!(
            denial.reason.contains("the issued sub is 128 bytes"),
            "{}",
            denial.reason
        );
    }

    #[test]
    fn credential_clouds_lists_the_blocks() {
        let set = try_compile(rule(aws(json!({})))).expect("compiles");
        assert_eq!(set.credential_clouds(), [("r", Cloud::Aws)]);
    }
}
