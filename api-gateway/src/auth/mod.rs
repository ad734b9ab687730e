//! Who is calling and what they may do.
//!
//! A request carries an access token (`Authorization: Bearer <jwt>`, or the bare token as
//! Testflinger's CLI sends it) or nothing. [`Caller`] is what the gateway makes of it: a client
//! with its permissions, or an anonymous user who acts as a `contributor` when the lab allows
//! anonymous use. Each handler states which roles it serves with [`Caller::require`], using the
//! role sets of [`access`], which are Testflinger's.
//!
//! - [`token`]: access and refresh tokens; [`password`]: client secrets (Argon2id);
//! - [`bootstrap`]: the first admin, from configuration or the `create-client` command;
//! - [`oidc`]: single sign-on with the lab's OpenID Connect provider (people), which turns
//!   anonymous use off; [`security`]: the security events log (sign-ins, refusals, role changes).
//!
//! A request may instead carry a job-files token, which a scheduler hands an agent with the
//! lease (`broker_schema::job_files`): such a caller is nobody — [`Caller::require`] refuses
//! it everywhere — except to the two handlers that ask [`Caller::files_for`].

pub mod bootstrap;
pub mod oidc;
pub mod password;
pub mod security;
pub mod token;

pub use token::{Claims, Permissions, TokenError, Tokens};

use broker_schema::job_files::{FilesClaims, FilesOperation, FilesTokenError, JobFilesKey};
use uuid::Uuid;

use crate::config::AuthArgs;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use flinger_store::Role;
use tracing::{info, warn};

/// The roles each endpoint serves, as Testflinger has them.
pub mod access {
    use flinger_store::Role::{self, *};

    /// Submitting and following jobs.
    pub const SUBMITTER: &[Role] = &[Admin, Manager, Contributor];
    /// What only agents do: post results, output, artifacts, events; read attachments.
    pub const AGENT: &[Role] = &[Agent];
    /// Agents report about themselves; admins and managers set their state.
    pub const AGENT_DATA: &[Role] = &[Admin, Manager, Agent];
    /// Everyone who is allowed in at all.
    pub const ANYONE: &[Role] = &[Admin, Manager, Contributor, Agent];
    /// Managing clients and restricted queues.
    pub const MANAGER: &[Role] = &[Admin, Manager];
    pub const ADMIN: &[Role] = &[Admin];
}

/// The gateway's access-control settings and token keys.
#[derive(Clone, Debug)]
pub struct Auth {
    pub tokens: Tokens,
    /// Verifies the job-scoped files tokens schedulers sign with the same key.
    pub files: JobFilesKey,
    pub allow_anonymous: bool,
    pub allow_anonymous_agents: bool,
    /// The bootstrap admin from configuration: the API may not change or delete it.
    pub bootstrap_admin: Option<String>,
    /// Encrypts the web UI's session cookies (derived from the same key as the tokens).
    pub session_key: crate::ui::SessionKey,
    /// Single sign-on, when the lab has an identity provider.
    pub oidc: Option<oidc::Oidc>,
    /// The gateway's URL as browsers reach it (`--public-url`), for redirect URIs.
    pub public_url: Option<url::Url>,
}

impl Auth {
    pub fn new(args: &AuthArgs) -> Result<Auth, String> {
        let oidc = oidc::OidcConfig::from_args(&args.oidc)?
            .map(oidc::Oidc::new)
            .transpose()?;
        if oidc.is_some() && (args.allow_anonymous || args.allow_anonymous_agents) {
            info!("single sign-on is on: anonymous use is off");
        }
        let key = match &args.jwt_signing_key {
            Some(k) if !k.is_empty() => k.as_bytes().to_vec(),
            _ => {
                warn!(
                    "no --jwt-signing-key: using a random one; tokens work only on this gateway and until it restarts"
                );
                token::random_key()
            }
        };
        Ok(Auth {
            tokens: Tokens::new(&key, args.access_token_ttl, args.refresh_token_ttl),
            files: JobFilesKey::new(&key),
            session_key: crate::ui::SessionKey::derive(&key),
            allow_anonymous: args.allow_anonymous && oidc.is_none(),
            allow_anonymous_agents: args.allow_anonymous_agents && oidc.is_none(),
            bootstrap_admin: args.admin_client_id.clone(),
            oidc,
            public_url: None,
        })
    }
}

/// The caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None`: no token.
    pub permissions: Option<Permissions>,
    /// A job-files token's claims: the caller may move that job's files, and nothing else.
    files: Option<FilesClaims>,
    allow_anonymous: bool,
    allow_anonymous_agents: bool,
}

impl Caller {
    /// An anonymous caller under `auth`'s policy.
    pub fn anonymous(auth: &Auth) -> Caller {
        Caller {
            permissions: None,
            files: None,
            allow_anonymous: auth.allow_anonymous,
            allow_anonymous_agents: auth.allow_anonymous_agents,
        }
    }

    pub fn client_id(&self) -> Option<&str> {
        self.permissions.as_ref().map(|p| p.client_id.as_str())
    }

    /// The role the caller acts with: its own, or `contributor` for an anonymous one.
    pub fn role(&self) -> Role {
        self.permissions.as_ref().map_or(Role::Contributor, |p| p.role)
    }

    /// Managers and admins may act on any job.
    pub fn is_manager(&self) -> bool {
        self.permissions.as_ref().is_some_and(|p| p.role >= Role::Manager)
    }

    /// 401 when the caller must log in first, 403 when its role is not one of `allowed`.
    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if self.files.is_some() {
            return Err(ApiError::Forbidden(
                "A job's files token serves only that job's attachments and artifact".into(),
            ));
        }
        match &self.permissions {
            Some(p) if allowed.contains(&p.role) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(format!(
                "Specified action requires role: {}",
                allowed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ))),
            None if self.allow_anonymous && allowed.contains(&Role::Contributor) => Ok(()),
            None if self.allow_anonymous_agents && allowed.contains(&Role::Agent) => Ok(()),
            None => Err(ApiError::Unauthorized(
                "Authentication is required for specified endpoint".into(),
            )),
        }
    }

    /// The claims of the caller's job-files token when it allows `op` on `job_id` (the handler
    /// still checks that the token's attempt is the job's running one); 403 when the caller has
    /// a files token for something else; `None` without one.
    pub fn files_for(&self, job_id: Uuid, op: FilesOperation) -> Result<Option<&FilesClaims>, ApiError> {
        match &self.files {
            Some(c) if c.allows(job_id, op) => Ok(Some(c)),
            Some(_) => Err(ApiError::Forbidden(
                "This files token is for another job or operation".into(),
            )),
            None => Ok(None),
        }
    }

    /// 401 unless the caller is a logged-in client; its id.
    pub fn require_client(&self, why: &str) -> Result<&Permissions, ApiError> {
        self.permissions
            .as_ref()
            .ok_or_else(|| ApiError::Unauthorized(format!("A login (known client_id) is required {why}")))
    }
}

/// The token of a request, if it has one: `Bearer <token>` or the bare token.
fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Forbidden("Invalid Token".into()))?;
    Ok(token_in(value))
}

/// The token a request carries, if its `Authorization` header is readable (unverified).
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    token_in(headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// `Bearer <token>`, or the bare token as Testflinger's CLI sends it.
fn token_in(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A bad token is refused even where no token is needed (Testflinger does the same): 401
    /// when it expired (the client should log in again), 403 when it is not ours.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = state.auth();
        let mut caller = Caller::anonymous(auth);
        if let Some(token) = bearer(parts)? {
            match auth.tokens.verify(token) {
                Ok(claims) => caller.permissions = Some(claims.permissions),
                Err(TokenError::Expired) => {
                    return Err(ApiError::Unauthorized(TokenError::Expired.to_string()));
                }
                // Not an access token: perhaps a job's files token.
                Err(e @ TokenError::Invalid) => match auth.files.verify(token) {
                    Ok(claims) => caller.files = Some(claims),
                    Err(FilesTokenError::Expired) => {
                        return Err(ApiError::Unauthorized(FilesTokenError::Expired.to_string()));
                    }
                    Err(FilesTokenError::Invalid) => return Err(ApiError::Forbidden(e.to_string())),
                },
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn caller(role: Option<Role>, anonymous: bool, anonymous_agents: bool) -> Caller {
        Caller {
            permissions: role.map(|role| Permissions {
                client_id: "c".into(),
                role,
                max_priority: BTreeMap::new(),
                allowed_queues: vec![],
                max_reservation_time: BTreeMap::new(),
            }),
            files: None,
            allow_anonymous: anonymous,
            allow_anonymous_agents: anonymous_agents,
        }
    }

    #[test]
    fn roles_are_checked_against_the_endpoint_set() {
        assert!(
            caller(Some(Role::Agent), true, false)
                .require(access::AGENT)
                .is_ok()
        );
        assert!(matches!(
            caller(Some(Role::Admin), true, false).require(access::AGENT),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            caller(Some(Role::Agent), true, false).require(access::SUBMITTER),
            Err(ApiError::Forbidden(_))
        ));
        assert!(
            caller(Some(Role::Manager), true, false)
                .require(access::MANAGER)
                .is_ok()
        );
    }

    #[test]
    fn anonymous_callers_act_as_contributors_only_when_allowed() {
        assert!(caller(None, true, false).require(access::SUBMITTER).is_ok());
        assert!(matches!(
            caller(None, false, false).require(access::SUBMITTER),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            caller(None, true, false).require(access::AGENT),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(caller(None, true, true).require(access::AGENT).is_ok());
        assert!(matches!(
            caller(None, true, true).require(access::MANAGER),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
