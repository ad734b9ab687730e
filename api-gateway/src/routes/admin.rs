//! Client permissions and restricted queues: who may log in, with what role, priority and
//! reservation limits, and which queues only their owners may use.

use crate::auth::bootstrap::valid_client_id;
use crate::auth::security::{self, Peer};
use crate::auth::{Caller, access, password};
use crate::error::ApiError;
use crate::extract::Body;
use crate::state::AppState;
use crate::validate;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_schema::{DeviceClass, Millis};
use flinger_api::{Client, ClientIn, Owner, RestrictedQueue, RetentionSettings, TokensRevoked};
use flinger_store::{ClientRecord, Records, Role};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tracing::info;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/client-permissions", get(list_clients))
        .route(
            "/v1/client-permissions/{client_id}",
            get(get_client).put(put_client).delete(delete_client),
        )
        .route("/v1/retention", get(retention))
        .route(
            "/v1/client-permissions/{client_id}/revoke-tokens",
            post(revoke_tokens),
        )
        .route("/v1/restricted-queues", get(list_restricted))
        .route(
            "/v1/restricted-queues/{queue}",
            get(get_restricted).post(add_owner).delete(remove_owner),
        )
}

/// Whether `caller` may change or delete the client `target` (of role `role`): admins any client,
/// anyone else only clients ranked below it, and itself.
fn may_manage(caller: &Caller, target: &str, role: Role) -> bool {
    let mine = caller.role();
    mine == Role::Admin || role < mine || caller.client_id() == Some(target)
}

fn may_not_manage(caller: &Caller, client_id: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "{} has insufficient permissions to modify client '{client_id}'",
        caller.client_id().unwrap_or("?")
    ))
}

/// A JSON object body; an empty body counts as an empty object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    crate::extract::json_object(body)
}

/// A client as `GET /v1/client-permissions` shows it: never its secret or hash.
fn client_view(c: &ClientRecord, owned: &[String]) -> Client {
    Client {
        client_id: c.client_id.clone(),
        role: c.role.as_str().to_owned(),
        max_priority: c.max_priority.clone(),
        max_reservation_time: c.max_reservation_time.clone(),
        allowed_queues: owned.to_vec(),
        email: c.email.clone(),
    }
}

/// Restricted queue → owners.
async fn owners(state: &AppState) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    crate::routes::agents::restricted_owners(state).await
}

fn owned_by(owners: &BTreeMap<String, Vec<String>>, client: &str) -> Vec<String> {
    owners
        .iter()
        .filter(|(_, o)| o.iter().any(|c| c == client))
        .map(|(q, _)| q.clone())
        .collect()
}

#[utoipa::path(
    get,
    path = "/v1/client-permissions",
    tag = "auth",
    summary = "Every client and its permissions",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = Vec<flinger_api::Client>),
    )
)]
async fn list_clients(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Client>>, ApiError> {
    caller.require(access::MANAGER)?;
    let owners = owners(&state).await?;
    let clients = state.store().list_clients().await?;
    Ok(Json(
        clients
            .iter()
            .map(|c| client_view(c, &owned_by(&owners, &c.client_id)))
            .collect(),
    ))
}

fn no_such_client() -> ApiError {
    ApiError::NotFound("Error: Specified client_id does not exist.".into())
}

#[utoipa::path(
    get,
    path = "/v1/client-permissions/{client_id}",
    tag = "auth",
    summary = "One client",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = flinger_api::Client),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn get_client(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Client>, ApiError> {
    caller.require(access::MANAGER)?;
    let client = state
        .store()
        .get_client(&client_id)
        .await?
        .ok_or_else(no_such_client)?;
    let owners = owners(&state).await?;
    Ok(Json(client_view(&client, &owned_by(&owners, &client_id))))
}

/// `PUT /v1/client-permissions/<id>` `{client_secret, role, max_priority, max_reservation_time,
/// email}`: creates the client (a secret is then required) or updates the fields given. A caller
/// may only manage clients [`may_manage`] allows, and give roles up to its own.
#[utoipa::path(
    put,
    path = "/v1/client-permissions/{client_id}",
    tag = "auth",
    summary = "Create or update a client (secrets are stored hashed; managers: only clients ranked below them, or themselves)",
    security(("bearer" = ["admin", "manager"])),
    request_body = flinger_api::ClientIn,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 400, body = flinger_api::Error),
    )
)]
async fn put_client(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    Path(client_id): Path<String>,
    Body(body): Body,
) -> Result<String, ApiError> {
    caller.require(access::MANAGER)?;
    if state.auth().bootstrap_admin.as_deref() == Some(client_id.as_str()) {
        return Err(ApiError::invalid_field(
            "client_id",
            "Error: System admin client cannot be modified from API.",
        ));
    }
    if !valid_client_id(&client_id) {
        return Err(ApiError::BadRequest(format!(
            "Invalid client id {client_id:?}: use letters, digits, _ . @ -"
        )));
    }
    // The shape is ClientIn's; what its schema cannot say: a role's name, an e-mail address.
    let ClientIn {
        client_secret: secret,
        role,
        max_priority,
        max_reservation_time: max_reservation,
        email,
    } = validate::object_checked(parse_object(&body)?, |v, errors| {
        if v["role"].as_str().is_some_and(|r| Role::parse(r).is_none()) {
            errors.add("role", "Must be one of: admin, manager, contributor, agent.");
        }
        if v["email"]
            .as_str()
            .is_some_and(|s| !s.contains('@') || s.starts_with('@') || s.ends_with('@'))
        {
            errors.add("email", "Not a valid email address.");
        }
    })?;
    let role = role.as_deref().and_then(Role::parse);
    let existing = state.store().get_client(&client_id).await?;
    let mine = caller.role();
    if let Some(c) = &existing
        && !may_manage(&caller, &client_id, c.role)
    {
        return Err(may_not_manage(&caller, &client_id));
    }
    if let Some(r) = role
        && mine < r
    {
        return Err(ApiError::Forbidden(format!(
            "{} has insufficient permissions to assign role '{r}' to client '{client_id}'",
            caller.client_id().unwrap_or("?")
        )));
    }
    // With single sign-on, an admin may give a person a role before their first sign-on: a
    // client without a secret, which only single sign-on opens.
    if existing.is_none() && secret.is_none() && state.oidc().is_none() {
        return Err(ApiError::BadRequest(
            "Error: Missing client_secret in request body for new client".into(),
        ));
    }
    let now = Millis::now();
    let created = existing.is_none();
    let previous_role = existing.as_ref().map(|c| c.role);
    let mut client = existing.unwrap_or_else(|| ClientRecord {
        client_id: client_id.clone(),
        secret_hash: None,
        role: Role::Contributor,
        max_priority: BTreeMap::new(),
        max_reservation_time: BTreeMap::new(),
        email: None,
        created_at: now,
        updated_at: now,
    });
    if let Some(s) = secret {
        client.secret_hash = Some(password::hash(s).await);
    }
    if let Some(r) = role {
        client.role = r;
    }
    if let Some(p) = max_priority {
        client.max_priority = p;
    }
    if let Some(r) = max_reservation {
        client.max_reservation_time = r;
    }
    if email.is_some() {
        client.email = email;
    }
    client.updated_at = now;
    state.store().put_client(&client).await?;
    info!(by = caller.client_id().unwrap_or("?"), client_id, role = %client.role, created, "client permissions set");
    if previous_role != Some(client.role) {
        let what = match previous_role {
            Some(r) => format!("role {r} -> {}", client.role),
            None => format!("created with role {}", client.role),
        };
        security::changed(
            &peer,
            "role_change",
            caller.client_id().unwrap_or("?"),
            &client_id,
            &what,
        );
    }
    Ok(if created {
        format!("Created permissions for client '{client_id}'")
    } else {
        format!("Updated permissions for client '{client_id}'")
    })
}

/// `POST /v1/client-permissions/<id>/revoke-tokens` [ext] (admins): revokes every refresh token
/// of the client — its CLI logins and web UI sessions end; access tokens already issued live
/// out their short lifetime.
#[utoipa::path(
    post,
    path = "/v1/client-permissions/{client_id}/revoke-tokens",
    tag = "auth",
    summary = "[ext] Revoke every refresh token (logins, web UI sessions) of a client",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = flinger_api::TokensRevoked),
    )
)]
async fn revoke_tokens(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    Path(client_id): Path<String>,
) -> Result<Json<TokensRevoked>, ApiError> {
    caller.require(access::ADMIN)?;
    let revoked = state.store().revoke_client_refresh_tokens(&client_id).await?;
    security::changed(
        &peer,
        "refresh_tokens_revoked",
        caller.client_id().unwrap_or("?"),
        &client_id,
        &format!("{revoked} refresh tokens"),
    );
    Ok(Json(TokensRevoked {
        revoked: revoked as u64,
    }))
}

/// `DELETE /v1/client-permissions/<id>`: admins delete any client, managers those ranked below
/// them (and themselves).
#[utoipa::path(
    delete,
    path = "/v1/client-permissions/{client_id}",
    tag = "auth",
    summary = "Delete a client (managers: only clients ranked below them, or themselves)",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn delete_client(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<&'static str, ApiError> {
    caller.require(access::MANAGER)?;
    if state.auth().bootstrap_admin.as_deref() == Some(client_id.as_str()) {
        return Err(ApiError::invalid_field(
            "client_id",
            "Error: System admin client cannot be deleted from API.",
        ));
    }
    let client = state
        .store()
        .get_client(&client_id)
        .await?
        .ok_or_else(no_such_client)?;
    if !may_manage(&caller, &client_id, client.role) {
        return Err(may_not_manage(&caller, &client_id));
    }
    if !state.store().delete_client(&client_id).await? {
        return Err(no_such_client());
    }
    info!(
        by = caller.client_id().unwrap_or("?"),
        client_id, "client deleted"
    );
    Ok("OK")
}

// ----- restricted queues

#[utoipa::path(
    get,
    path = "/v1/restricted-queues",
    tag = "auth",
    summary = "Restricted queues and their owners",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = Vec<flinger_api::RestrictedQueue>),
    )
)]
async fn list_restricted(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<RestrictedQueue>>, ApiError> {
    caller.require(access::MANAGER)?;
    let owners = owners(&state).await?;
    Ok(Json(
        owners
            .into_iter()
            .map(|(queue, owners)| RestrictedQueue { queue, owners })
            .collect(),
    ))
}

fn not_restricted() -> ApiError {
    ApiError::NotFound("Error: Restricted queue not found.".into())
}

#[utoipa::path(
    get,
    path = "/v1/restricted-queues/{queue}",
    tag = "auth",
    summary = "One restricted queue; 404 if not restricted",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = flinger_api::RestrictedQueue),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn get_restricted(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<RestrictedQueue>, ApiError> {
    caller.require(access::MANAGER)?;
    let r = state
        .store()
        .get_restricted_queue(&queue)
        .await?
        .ok_or_else(not_restricted)?;
    Ok(Json(RestrictedQueue {
        queue,
        owners: r.owners.into_iter().collect(),
    }))
}

/// The `client_id` of a restricted-queue request body (422 when missing).
fn owner_field(body: &[u8]) -> Result<String, ApiError> {
    Ok(validate::object::<Owner>(parse_object(body)?)?.client_id)
}

/// `POST /v1/restricted-queues/<q>` `{client_id}`: restricts the queue (if it was not) to its
/// owners and adds one. The client must exist, and an agent must serve or have advertised the
/// queue.
#[utoipa::path(
    post,
    path = "/v1/restricted-queues/{queue}",
    tag = "auth",
    summary = "Restrict a queue and add an owner",
    security(("bearer" = ["admin", "manager"])),
    request_body = flinger_api::Owner,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn add_owner(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::MANAGER)?;
    let client_id = owner_field(&body)?;
    if state.store().get_client(&client_id).await?.is_none() {
        return Err(no_such_client());
    }
    let class = DeviceClass::parse(queue.clone())
        .map_err(|_| ApiError::NotFound("Error: No agent is associated with the specified queue.".into()))?;
    let served = state
        .store()
        .list_agents()
        .await?
        .iter()
        .any(|a| a.queues.contains(&class));
    if !served && state.store().get_queue(&queue).await?.is_none() {
        return Err(ApiError::NotFound(
            "Error: No agent is associated with the specified queue.".into(),
        ));
    }
    state.store().add_restricted_owner(&queue, &client_id).await?;
    info!(by = caller.client_id().unwrap_or("?"), %queue, owner = %client_id, "restricted queue owner added");
    Ok("OK")
}

/// `DELETE /v1/restricted-queues/<q>` `{client_id}`: removes an owner; the last one leaving lifts
/// the restriction.
#[utoipa::path(
    delete,
    path = "/v1/restricted-queues/{queue}",
    tag = "auth",
    summary = "Remove an owner (the last one lifts the restriction)",
    security(("bearer" = ["admin", "manager"])),
    request_body = flinger_api::Owner,
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn remove_owner(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Body(body): Body,
) -> Result<&'static str, ApiError> {
    caller.require(access::MANAGER)?;
    if state.store().get_restricted_queue(&queue).await?.is_none() {
        return Err(not_restricted());
    }
    let client_id = owner_field(&body)?;
    state.store().remove_restricted_owner(&queue, &client_id).await?;
    info!(by = caller.client_id().unwrap_or("?"), %queue, owner = %client_id, "restricted queue owner removed");
    Ok("OK")
}

/// **[ext]** How long ended jobs are kept: the settings the scheduler recorded when it started
/// (the gateway does not see the scheduler's configuration).
#[utoipa::path(
    get,
    path = "/v1/retention",
    tag = "auth",
    summary = "[ext] Retention of ended jobs, as the scheduler recorded it",
    security(("bearer" = ["admin", "manager"])),
    responses(
        (status = 200, body = flinger_api::RetentionSettings),
        (status = 404, body = flinger_api::Error),
    )
)]
async fn retention(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RetentionSettings>, ApiError> {
    caller.require(access::MANAGER)?;
    let r =
        state.store().get_retention_settings().await?.ok_or_else(|| {
            ApiError::NotFound("No scheduler has recorded its retention settings yet".into())
        })?;
    Ok(Json(RetentionSettings {
        keep_days: r.keep_days,
        per_queue: r.per_queue,
        purge_every_secs: r.purge_every_secs,
        recorded_by: r.recorded_by,
        recorded_at: crate::views::time(r.recorded_at),
    }))
}
