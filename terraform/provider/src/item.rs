//! What the resources `fedbroker_issuer` and `fedbroker_rule` share: each manages one
//! item of the admin API (`/admin/v1/{issuers,rules}/{name}`), read, planned, created,
//! updated, deleted and imported the same way. [`Item`] is what differs between them;
//! [`ItemResource`] is the one Terraform resource built on it.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use tf_provider::schema::Schema;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::ProviderError;
use crate::client::{Client, Kind, Precondition, report};
use crate::provider::Shared;
use crate::values::{PrivateState, Str, etag_of, private_with};

/// Why a state cannot become the broker's JSON yet.
#[derive(Debug)]
pub enum NotReady {
    /// Terraform does not know some value yet.
    Unknown,
    /// Problems the provider finds on its own: (path, message).
    Invalid(Vec<(AttributePath, String)>),
}

impl From<crate::values::Unknown> for NotReady {
    fn from(_: crate::values::Unknown) -> Self {
        NotReady::Unknown
    }
}

/// The state of one kind of admin API item, and what the shared resource needs to know
/// about it.
pub trait Item: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Its collection in the admin API.
    const KIND: Kind;
    /// The detail of the error when `terraform import` names an item the broker lacks.
    const IMPORT_DETAIL: &'static str;

    /// The resource's schema.
    const SCHEMA: fn() -> Schema;
    /// The attribute a field of the broker's schema (`match.claims.x`) is reported at.
    const PATH_OF: fn(&str) -> AttributePath;
    /// Report what can be checked without the broker; `false` when it reported errors.
    const CHECK: fn(&mut Diagnostics, &Self) -> bool;

    /// The `name` attribute: the item's name in the admin API.
    fn name(&self) -> &Str;
    /// The computed `id` attribute (the name, once known).
    fn id_mut(&mut self) -> &mut Str;
    /// Fill the defaults the provider computes in a planned state.
    fn fill_defaults(&mut self);
    /// The JSON the broker is sent for this state.
    fn body(&self) -> Result<Json, NotReady>;
    /// Whether [`Item::claim_warnings`] can say anything (the issuers are read for it).
    const REFERS_TO_CLAIMS: bool = false;

    /// Warnings about the claims the item refers to that tokens of its issuer's kind
    /// never carry (`issuer_of`: the kind and `extra_claims` of each issuer by name,
    /// `None` when not known); only rules refer to claims.
    fn claim_warnings<'k>(
        &self,
        _issuer_of: &dyn Fn(&str) -> issuer_schema::IssuerClaims<'k>,
    ) -> Vec<String> {
        Vec::new()
    }

    /// The state for an item read from the broker, or why the item is not one.
    fn from_item(item: &Json) -> Result<Self, ProviderError>;
    /// The state after reading `item` from the broker: `None` when it means what
    /// `prior` does (the state is kept as written), or why the item is not one.
    fn refresh(prior: &Self, item: &Json) -> Result<Option<Self>, ProviderError>;
}

/// The Terraform resource for the items of type `T`.
pub struct ItemResource<T> {
    shared: Arc<Shared>,
    item: PhantomData<fn() -> T>,
}

impl<T: Item> ItemResource<T> {
    pub fn new(shared: Arc<Shared>) -> Self {
        ItemResource {
            shared,
            item: PhantomData,
        }
    }

    /// The client and the item's name, or `None` with what is missing reported.
    fn client_and_name(&self, diags: &mut Diagnostics, state: &T) -> Option<(Arc<Client>, String)> {
        let client = self.shared.client(diags)?;
        let name = name_of(diags, state)?;
        Some((client, name))
    }

    /// At plan time, the claim checks `fedbroker check` makes, against the kinds of the
    /// issuers the broker has now (an issuer made in the same apply is not there yet:
    /// the broker's own warning then comes with the apply). Best effort: a broker that
    /// cannot be asked gives no warning, never an error.
    async fn plan_claim_warnings(&self, diags: &mut Diagnostics, planned: &T) {
        if !T::REFERS_TO_CLAIMS {
            return;
        }
        let Some(client) = self.shared.configured() else {
            return;
        };
        let Ok(kinds) = client.issuer_kinds().await else {
            return;
        };
        let issuer_of = |issuer: &str| {
            let (_, kind, extra) = kinds.iter().find(|(name, _, _)| name == issuer)?;
            let kind = kind.as_deref()?.parse::<issuers::IssuerKind>().ok()?;
            Some((kind, extra.as_slice()))
        };
        for warning in planned.claim_warnings(&issuer_of) {
            diags.root_warning(format!("fedbroker {}: {warning}", noun::<T>()), warning);
        }
    }

    /// Create or update: PUT the planned state under `precondition`.
    async fn put(
        &self,
        diags: &mut Diagnostics,
        planned_state: T,
        precondition: Precondition,
        doing: &str,
    ) -> Option<(T, PrivateState)> {
        let (client, name) = self.client_and_name(diags, &planned_state)?;
        let body = body_of(diags, &planned_state)?;
        match client.put(T::KIND, &name, &body, &precondition).await {
            Ok(item) => {
                // The broker's warnings about the policy after the change (the claim
                // checks among them, now that every issuer of this apply exists).
                for warning in &item.warnings {
                    diags.root_warning(format!("fedbroker {}: {warning}", noun::<T>()), warning.clone());
                }
                Some((planned_state, private_with(item.etag)))
            }
            Err(e) => {
                report(diags, &client, T::KIND, &name, doing, e, &T::PATH_OF);
                None
            }
        }
    }
}

fn noun<T: Item>() -> &'static str {
    T::KIND.singular()
}

fn name_of<T: Item>(diags: &mut Diagnostics, state: &T) -> Option<String> {
    match state.name() {
        Value::Value(n) => Some(n.clone()),
        _ => {
            diags.error_short(
                format!("the {}'s name is not known", noun::<T>()),
                AttributePath::new("name"),
            );
            None
        }
    }
}

fn body_of<T: Item>(diags: &mut Diagnostics, state: &T) -> Option<Json> {
    match state.body() {
        Ok(json) => Some(json),
        Err(NotReady::Unknown) => {
            diags.root_error_short(format!(
                "the {} still has unknown values at apply time",
                noun::<T>()
            ));
            None
        }
        Err(NotReady::Invalid(problems)) => {
            report_invalid::<T>(diags, problems);
            None
        }
    }
}

/// Report problems found in a state, each at its attribute.
pub fn report_invalid<T: Item>(diags: &mut Diagnostics, problems: Vec<(AttributePath, String)>) {
    for (path, message) in problems {
        diags.error(format!("Invalid fedbroker {}", noun::<T>()), message, path);
    }
}

/// The planned state for a proposed one: what the provider computes filled in, and
/// checked.
fn planned<T: Item>(diags: &mut Diagnostics, proposed: T) -> T {
    let mut planned = proposed;
    let id = match planned.name() {
        Value::Value(n) => Value::Value(n.clone()),
        _ => Value::Unknown,
    };
    *planned.id_mut() = id;
    planned.fill_defaults();
    (T::CHECK)(diags, &planned);
    planned
}

/// The error for an item of the broker that does not parse as a `T`.
fn not_an_item<T: Item>(diags: &mut Diagnostics, doing: &str, name: &str, detail: ProviderError) {
    let noun = noun::<T>();
    diags.root_error(
        format!("{doing} {noun} `{name}`: the broker's item is not a {noun}"),
        detail.to_string(),
    );
}

#[async_trait]
impl<T: Item> Resource for ItemResource<T> {
    type State<'a> = T;
    type PrivateState<'a> = PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some((T::SCHEMA)())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        (T::CHECK)(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // `None` would tell Terraform the item is gone: never say so without asking.
        let Some((client, name)) = self.client_and_name(diags, &state) else {
            return Some((state, private_state));
        };
        let item = match client.get(T::KIND, &name).await {
            Ok(Some(item)) => item,
            Ok(None) => return None,
            Err(e) => {
                report(diags, &client, T::KIND, &name, "reading", e, &T::PATH_OF);
                return Some((state, private_state));
            }
        };
        match T::refresh(&state, &item.value) {
            // Unchanged on the broker: keep the state as written (formatting of JSON,
            // null versus empty lists). Changed: the broker's version, so that plan
            // shows the drift.
            Ok(fresh) => Some((fresh.unwrap_or(state), private_with(item.etag))),
            Err(detail) => {
                not_an_item::<T>(diags, "reading", &name, detail);
                Some((state, private_state))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let planned = planned(diags, proposed_state);
        self.plan_claim_warnings(diags, &planned).await;
        Some((planned, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut replace = Vec::new();
        if proposed_state.name() != prior_state.name() {
            replace.push(AttributePath::new("name"));
        }
        let planned = planned(diags, proposed_state);
        self.plan_claim_warnings(diags, &planned).await;
        Some((planned, prior_private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        self.put(diags, planned_state, Precondition::Absent, "creating")
            .await
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let precondition = etag_of(&planned_private_state).map_or(Precondition::None, Precondition::Matches);
        self.put(diags, planned_state, precondition, "updating").await
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let (client, name) = self.client_and_name(diags, &prior_state)?;
        match client.delete(T::KIND, &name).await {
            Ok(_) => Some(()),
            Err(e) => {
                report(diags, &client, T::KIND, &name, "deleting", e, &T::PATH_OF);
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.shared.client(diags)?;
        match client.get(T::KIND, &id).await {
            Ok(Some(item)) => match T::from_item(&item.value) {
                Ok(state) => Some((state, private_with(item.etag))),
                Err(detail) => {
                    not_an_item::<T>(diags, "importing", &id, detail);
                    None
                }
            },
            Ok(None) => {
                let noun = noun::<T>();
                diags.root_error(
                    format!("importing {noun} `{id}`: the broker has no such {noun}"),
                    T::IMPORT_DETAIL,
                );
                None
            }
            Err(e) => {
                report(diags, &client, T::KIND, &id, "importing", e, &T::PATH_OF);
                None
            }
        }
    }
}
