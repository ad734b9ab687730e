//! Access control: tokens, clients, restricted queues and secrets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /v1/oauth2/token` and `/v1/oauth2/refresh`: an access token (and, at login, a refresh
/// token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// `POST /v1/oauth2/refresh` and `/v1/oauth2/revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefreshToken {
    #[schema(min_length = 1)]
    pub refresh_token: String,
}

/// `POST /oidc/auth-init`: a device login started at the lab's identity provider (RFC 8628),
/// without its device code, which stays on the gateways: the person opens `verification_uri`
/// and enters `user_code`; the CLI polls `POST /oidc/auth-poll/<request_id>` every `interval`
/// seconds until `expires_in` runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceLogin {
    pub request_id: String,
    pub user_code: String,
    pub verification_uri: String,
    /// The verification URI with the code in it, when the provider gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

/// `POST /oidc/auth-poll/<request_id>` while the login is not done (400), with RFC 8628's codes:
/// `authorization_pending`, `slow_down` (with `Retry-After`), `access_denied`,
/// `expired_token`, or `invalid_grant` (an unknown, used or refused request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceLoginError {
    /// One of [`DeviceLoginCode`]'s (a reader takes any string: a newer server may say more).
    #[schema(value_type = DeviceLoginCode)]
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What [`DeviceLoginError::error`] may say: RFC 8628 §3.5's codes and the RFC 6749 §5.2 codes a
/// provider may give a device login's token request, as the gateway passes them on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceLoginCode {
    /// The person has not decided yet: poll again after `interval`.
    AuthorizationPending,
    /// Polled too soon: wait `Retry-After` seconds.
    SlowDown,
    /// The person refused at the provider, or the gateway refused the provider's ID token
    /// (`message` says why).
    AccessDenied,
    /// The login expired: start again.
    ExpiredToken,
    /// The request id is unknown or was used, or the provider refused the device code.
    InvalidGrant,
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
}

impl DeviceLoginCode {
    pub const ALL: [DeviceLoginCode; 10] = [
        DeviceLoginCode::AuthorizationPending,
        DeviceLoginCode::SlowDown,
        DeviceLoginCode::AccessDenied,
        DeviceLoginCode::ExpiredToken,
        DeviceLoginCode::InvalidGrant,
        DeviceLoginCode::InvalidRequest,
        DeviceLoginCode::InvalidClient,
        DeviceLoginCode::UnauthorizedClient,
        DeviceLoginCode::UnsupportedGrantType,
        DeviceLoginCode::InvalidScope,
    ];

    /// The code as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceLoginCode::AuthorizationPending => "authorization_pending",
            DeviceLoginCode::SlowDown => "slow_down",
            DeviceLoginCode::AccessDenied => "access_denied",
            DeviceLoginCode::ExpiredToken => "expired_token",
            DeviceLoginCode::InvalidGrant => "invalid_grant",
            DeviceLoginCode::InvalidRequest => "invalid_request",
            DeviceLoginCode::InvalidClient => "invalid_client",
            DeviceLoginCode::UnauthorizedClient => "unauthorized_client",
            DeviceLoginCode::UnsupportedGrantType => "unsupported_grant_type",
            DeviceLoginCode::InvalidScope => "invalid_scope",
        }
    }
}

/// `POST /v1/client-permissions/<id>/revoke-tokens` [ext]: how many of the client's refresh
/// tokens (CLI logins and web UI sessions) were revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokensRevoked {
    pub revoked: u64,
}

/// A client as `GET /v1/client-permissions` shows it: never its secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Client {
    pub client_id: String,
    /// `admin`, `manager`, `contributor` or `agent`.
    pub role: String,
    /// Highest `job_priority` per queue, or for every queue under `*`.
    #[serde(default)]
    pub max_priority: BTreeMap<String, u32>,
    /// Longest reservation in seconds per queue, or for every queue under `*`.
    #[serde(default)]
    pub max_reservation_time: BTreeMap<String, u64>,
    /// The restricted queues it owns.
    #[serde(default)]
    pub allowed_queues: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A restricted queue and the clients that own it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestrictedQueue {
    pub queue: String,
    pub owners: Vec<String>,
}

/// `POST`/`DELETE /v1/restricted-queues/<queue>`: the owner to add or remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Owner {
    #[schema(min_length = 1)]
    pub client_id: String,
}

/// `PUT /v1/secrets/<client>/<path>`: when the secret expires, if it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretWritten {
    pub expires_at: Option<String>,
}

/// `PUT /v1/client-permissions/<id>`: a client to create, or the fields of one to change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 15)]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority: Option<BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reservation_time: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `PUT /v1/secrets/<client>/<path>`: the value, and when it expires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretIn {
    #[schema(min_length = 1)]
    pub value: String,
    /// Seconds the secret lives. Absent: the lab's default lifetime (a year unless the gateway
    /// says otherwise); `null`: until deleted.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub expire_after: Option<Option<u64>>,
    /// Single use: deleted as the first job naming it is given it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
}

/// A field that may be absent (`None`) or sent, possibly as `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// **[ext]** `GET /v1/retention`: how long ended jobs are kept, as the scheduler that started
/// last recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetentionSettings {
    /// Days ended jobs are kept in queues without a setting of their own; `null`: forever.
    pub keep_days: Option<f64>,
    /// Queues with a setting of their own, in days (`null`: forever).
    #[serde(default)]
    pub per_queue: BTreeMap<String, Option<f64>>,
    /// Seconds between two purges.
    pub purge_every_secs: f64,
    /// The scheduler that recorded these settings.
    pub recorded_by: String,
    #[schema(format = DateTime)]
    pub recorded_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_login_codes_are_spelled_as_serde_writes_them() {
        for code in DeviceLoginCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
