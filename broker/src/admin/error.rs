//! Why an admin request is refused: one variant per reason. How each is answered
//! (status, code, description, headers) is mapped in [`crate::error`].

use serde_json::Value;

use super::Kind;
use crate::admin_store::StoreError;
use crate::policy::LoadError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("a valid admin bearer token is required")]
    Unauthenticated,
    /// `GET` of an item the admin API did not make; `in_file`: the configuration file
    /// defines it.
    #[error("no {} `{name}` made through the admin API", kind.singular())]
    NotFound { kind: Kind, name: String, in_file: bool },
    /// `DELETE` of an item the admin API did not make.
    #[error("no `{0}` made through the admin API")]
    NothingToDelete(String),
    #[error("{} `{name}` is defined in the configuration file", kind.singular())]
    OwnedByFile { kind: Kind, name: String },
    /// Deleting an issuer that rules still use (`rules`: every one of them).
    #[error("issuer `{issuer}` is still used by {} rule(s)", rules.len())]
    InUse { issuer: String, rules: Vec<String> },
    #[error("the item changed (or exists, or does not): fetch it again")]
    PreconditionFailed,
    #[error("the request body exceeds {0} bytes (server.max_body_bytes)")]
    BodyTooLarge(usize),
    /// Every problem with the body (`source`, `line`, `field`, `message` each).
    #[error("{} problem(s)", .0.len())]
    Invalid(Vec<Value>),
    #[error("no configuration file")]
    NoConfigFile,
    #[error("the change could not be applied")]
    NotApplied,
    #[error("the change could not be stored")]
    NotStored,
    /// Stored, but it does not install here.
    #[error("{0}")]
    Install(LoadError),
    #[error("admin state store: {0}")]
    Store(StoreError),
    /// The write's reply was lost and the read-back says it did not apply.
    #[error("the admin state store did not answer in time: the change was not applied")]
    StoreTimedOut,
    /// Neither the write nor its read-back was answered.
    #[error("the admin state store did not answer: whether the change applied is unknown")]
    OutcomeUnknown,
    #[error("the admin state kept changing under this request")]
    KeptChanging,
    #[error("no issuer named `{0}` is in force")]
    NoIssuer(String),
    /// Something the answer needs cannot be had for now (issuer keys, a key service).
    #[error("{0}")]
    Unavailable(String),
}
