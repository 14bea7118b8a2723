//! Fixtures shared by the unit tests.

use serde_json::Value;

use crate::{Actor, Claims, CompileContext, Request, RuleError, RuleSet, parse_rules_json};

pub(crate) const ISSUERS: &[&str] = &["github-actions", "gitlab", "agents", "k8s"];

fn known_issuer(name: &str) -> bool {
    ISSUERS.contains(&name)
}

pub(crate) fn ctx() -> CompileContext<'static> {
    CompileContext {
        issuers: &known_issuer,
        max_lifetime: 3600,
    }
}

pub(crate) fn try_compile(rules: Value) -> Result<RuleSet, Vec<RuleError>> {
    let raw = match parse_rules_json(&rules.to_string()) {
        Ok(raw) => raw,
        Err(e) => panic!("fixture does not parse: {e}"),
    };
    RuleSet::compile(raw, &ctx())
}

pub(crate) fn compile(rules: Value) -> RuleSet {
    match try_compile(rules) {
        Ok(set) => set,
        Err(errors) => panic!("fixture does not compile: {errors:#?}"),
    }
}

pub(crate) fn claims(value: Value) -> Claims {
    match value {
        Value::Object(map) => Claims(map),
        other => panic!("claims must be an object, got {other}"),
    }
}

/// An owned request, so tests can build one in a line and borrow it as a [`Request`].
pub(crate) struct Req {
    pub(crate) issuer: String,
    pub(crate) claims: Claims,
    pub(crate) audiences: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) targets: Vec<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) actor: Option<(String, Claims)>,
    pub(crate) dpop: bool,
    /// (uri_sans, subject, sha256)
    pub(crate) client_cert: Option<(Vec<String>, String, String)>,
}

impl Req {
    pub(crate) fn new(issuer: &str, claims_json: Value, targets: &[&str]) -> Req {
        Req {
            issuer: issuer.to_owned(),
            claims: claims(claims_json),
            audiences: targets.iter().map(|t| (*t).to_owned()).collect(),
            resources: Vec::new(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            scopes: Vec::new(),
            actor: None,
            dpop: false,
            client_cert: None,
        }
    }

    /// The request carries a valid DPoP proof.
    pub(crate) fn dpop(mut self) -> Req {
        self.dpop = true;
        self
    }

    /// The request comes with a client certificate.
    pub(crate) fn client_cert(mut self, uri_sans: &[&str], subject: &str, sha256: &str) -> Req {
        let sans = uri_sans.iter().map(|u| (*u).to_owned()).collect();
        self.client_cert = Some((sans, subject.to_owned(), sha256.to_owned()));
        self
    }

    /// Adds `resource` values (targets too).
    pub(crate) fn resources(mut self, resources: &[&str]) -> Req {
        for r in resources {
            self.resources.push((*r).to_owned());
            if !self.targets.iter().any(|t| t == r) {
                self.targets.push((*r).to_owned());
            }
        }
        self
    }

    pub(crate) fn scopes(mut self, scopes: &[&str]) -> Req {
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub(crate) fn actor(mut self, issuer: &str, claims_json: Value) -> Req {
        self.actor = Some((issuer.to_owned(), claims(claims_json)));
        self
    }

    pub(crate) fn request(&self) -> Request<'_> {
        Request {
            issuer: &self.issuer,
            claims: &self.claims,
            audiences: &self.audiences,
            resources: &self.resources,
            targets: &self.targets,
            scopes: &self.scopes,
            requested_token_type: "urn:ietf:params:oauth:token-type:jwt",
            actor: self
                .actor
                .as_ref()
                .map(|(issuer, claims)| Actor { issuer, claims }),
            dpop: self.dpop,
            client_cert: self
                .client_cert
                .as_ref()
                .map(|(uri_sans, subject, sha256)| crate::CallerCert {
                    uri_sans,
                    subject,
                    sha256,
                }),
        }
    }
}
