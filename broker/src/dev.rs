//! `serve --dev` (contract §7): a built-in development issuer at `/dev/issuer` that mints
//! test tokens, one example rule granting them the audience `example-target`, keys in
//! memory, memory replay. No files, no network, loopback only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use federation_rules::RawRule;
use issuers::{Algorithm, IssuerPolicy, KeySet};
use serde_json::{Value, json};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{
    self, Config, DEFAULT_CLOCK_SKEW, DEFAULT_CLOUD_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ISSUED_LIFETIME, IssuerConfig, KeySource, ReplayMode, ServerConfig, SigningConfig,
};
use crate::signing::{Signer, SigningError};

pub const DEV_ISSUER_NAME: &str = "dev";
pub const EXAMPLE_TARGET: &str = "example-target";
/// Lifetime of minted development tokens unless the body gives `exp`.
pub const DEV_TOKEN_LIFETIME: u64 = 600;

/// Why the development configuration cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("--dev refuses to listen on {0}: development mode is loopback only")]
    NotLoopback(SocketAddr),
    #[error("{0}")]
    Signing(#[from] SigningError),
    #[error("{0}")]
    Keys(issuers::JwksError),
    #[error("{0}")]
    Rule(serde_json::Error),
    #[error("{0}")]
    Config(String),
}

/// Why the development issuer does not mint a token (answered in [`crate::error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error("the body must be a JSON object of claims")]
    NotClaims,
    #[error("could not sign: {0}")]
    Signing(SigningError),
}

/// The development issuer: its own in-memory key, its `iss`, its default `aud`.
pub struct DevIssuer {
    pub iss: String,
    pub default_audience: String,
    signer: Signer,
    /// `iat` and the default `exp` of minted tokens.
    clock: SharedClock,
}

impl DevIssuer {
    pub fn mint(&self, mut claims: serde_json::Map<String, Value>) -> Result<String, SigningError> {
        let now = self.clock.unix();
        claims
            .entry("iss")
            .or_insert_with(|| Value::String(self.iss.clone()));
        claims
            .entry("aud")
            .or_insert_with(|| Value::String(self.default_audience.clone()));
        claims.entry("iat").or_insert_with(|| json!(now));
        claims
            .entry("exp")
            .or_insert_with(|| json!(now + DEV_TOKEN_LIFETIME));
        claims.entry("jti").or_insert_with(|| Value::String(random_id()));
        self.signer.sign_jwt("JWT", &Value::Object(claims))
    }
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The development configuration for `listen`, which must be a loopback address.
pub fn config(listen: SocketAddr) -> Result<(Config, Signer, Arc<DevIssuer>), DevError> {
    if !listen.ip().is_loopback() {
        return Err(DevError::NotLoopback(listen));
    }
    let public_url = format!("http://{listen}");
    let dev_signer = Signer::ephemeral(Algorithm::ES256)?;
    let dev_keys = KeySet::from_jwks_value(&dev_signer.jwks()).map_err(DevError::Keys)?;
    let dev = Arc::new(DevIssuer {
        iss: format!("{public_url}/dev/issuer"),
        default_audience: public_url.clone(),
        signer: dev_signer,
        clock: SystemClock::shared(),
    });
    let issuer = IssuerConfig {
        name: DEV_ISSUER_NAME.into(),
        kind: issuers::IssuerKind::Generic,
        kind_params: Default::default(),
        allow_access_tokens: false,
        extra_claims: Vec::new(),
        tls_ca_pem: None,
        policy: IssuerPolicy {
            issuer: dev.iss.clone(),
            audiences: vec![public_url.clone()],
            algorithms: vec![Algorithm::ES256],
            max_token_lifetime: Some(24 * 3600),
            clock_skew: DEFAULT_CLOCK_SKEW,
        },
        keys: KeySource::Static(Arc::new(dev_keys)),
        replay: ReplayMode::OneTime,
        danger_allow_insecure: true,
    };
    let rule: RawRule = serde_json::from_value(json!({
        "name": "dev-example",
        "description": "Development: any token from the dev issuer may be exchanged for example-target",
        "match": {
            "issuer": DEV_ISSUER_NAME,
            "allow_any_subject": true,
            "audiences": [EXAMPLE_TARGET],
        },
        "issue": {
            "lifetime": "15m",
            "claims": {"dev_subject": "{sub}"},
        },
    }))
    .map_err(DevError::Rule)?;
    let server = ServerConfig {
        listen,
        public_url,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        clock_skew: DEFAULT_CLOCK_SKEW,
        max_issued_lifetime: DEFAULT_MAX_ISSUED_LIFETIME,
        cloud_timeout: DEFAULT_CLOUD_TIMEOUT,
        limits: Default::default(),
        tls: None,
        dpop_nonce: None,
    };
    let signing = SigningConfig {
        algorithm: Algorithm::RS256,
        key_dir: None,
        active_kid: None,
        rotation: None,
        kms: None,
    };
    let config = config::from_parts(server, signing, vec![issuer], vec![rule])
        .map_err(|e| DevError::Config(e.to_string()))?;
    let signer = Signer::ephemeral(Algorithm::RS256)?;
    Ok((config, signer, dev))
}

/// The development issuer's routes; their state is the issuer alone.
pub fn routes() -> Router<Arc<DevIssuer>> {
    Router::new()
        .route("/dev/issuer/token", post(mint))
        .route("/dev/issuer/.well-known/openid-configuration", get(discovery))
        .route("/dev/issuer/jwks.json", get(jwks))
}

async fn mint(State(dev): State<Arc<DevIssuer>>, body: axum::body::Bytes) -> Result<Response, MintError> {
    let claims = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(MintError::NotClaims),
        }
    };
    let token = dev.mint(claims).map_err(MintError::Signing)?;
    Ok(Json(json!({ "token": token })).into_response())
}

async fn discovery(State(dev): State<Arc<DevIssuer>>) -> Response {
    Json(json!({
        "issuer": dev.iss,
        "jwks_uri": format!("{}/jwks.json", dev.iss),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

async fn jwks(State(dev): State<Arc<DevIssuer>>) -> Response {
    Json((*dev.signer.jwks()).clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use base64::Engine;
    use std::time::{Duration, UNIX_EPOCH};

    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("json")
    }

    /// Minted tokens take their times from the broker's clock: a test moves it.
    #[test]
    fn minted_tokens_follow_the_clock() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000)));
        let dev = DevIssuer {
            iss: "http://127.0.0.1:1/dev/issuer".into(),
            default_audience: "http://127.0.0.1:1".into(),
            signer: Signer::ephemeral(Algorithm::ES256).expect("signer"),
            clock: clock.clone(),
        };
        let first = payload(&dev.mint(serde_json::Map::new()).expect("mint"));
        assert_eq!(first["iat"], 1_000_000);
        assert_eq!(first["exp"], 1_000_000 + DEV_TOKEN_LIFETIME);
        clock.advance(Duration::from_secs(90));
        let second = payload(&dev.mint(serde_json::Map::new()).expect("mint"));
        assert_eq!(second["iat"], 1_000_090);
    }
}
