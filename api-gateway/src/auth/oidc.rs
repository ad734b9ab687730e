//! Single sign-on with OpenID Connect: the one place that talks to the lab's identity provider.
//!
//! The provider is found by discovery (`<issuer>/.well-known/openid-configuration`, fetched on
//! first use and kept); its ID tokens are verified against its JWKS — signature, issuer,
//! audience (our client id), expiry and, in the browser flow, the nonce — with the `openidconnect`
//! crate, and the key set is fetched again when a token names a key it does not hold (the
//! provider rotated its keys) — at most once per `--oidc-jwks-refetch-interval`, so that forged
//! tokens naming made-up keys cannot make the gateway hammer the provider. What a verified ID token says is an [`Identity`]: the person's
//! e-mail (their client id here) and, with `--oidc-role-claim`, the role a claim maps to.
//!
//! Two flows use it: the CLI's device login (`routes/oidc.rs`: Testflinger's `/oidc/auth-init`
//! and `/oidc/auth-poll/<request_id>`) and the web UI's authorization-code sign-in with PKCE,
//! state and nonce (`ui/sso.rs`). Neither keeps anything in memory between requests: what a flow
//! must remember lives in the store (`flinger_store::PendingSignOnRecord`), so any gateway of the
//! lab can finish a sign-on another one started.
//!
//! This module never logs a token, a code or the client secret.

use crate::config::OidcArgs;
use flinger_store::Role;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AsyncHttpClient, AuthUrl, AuthorizationCode,
    ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl,
    DeviceCodeErrorResponse, DeviceCodeErrorResponseType, EmptyExtraDeviceAuthorizationFields,
    EmptyExtraTokenFields, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenFields,
    IdTokenVerifier, IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};
use tracing::{debug, info};

/// How long one request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The scopes every sign-in asks for (Testflinger's), plus `--oidc-scope`.
const SCOPES: [&str; 2] = ["email", "profile"];

/// Every claim of an ID token besides the standard ones (for `--oidc-role-claim`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OtherClaims(BTreeMap<String, Value>);

impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
/// The provider's token answer (either grant), with its ID token.
type TokenAnswer = StandardTokenResponse<IdFields, CoreTokenType>;

/// The discovery document, with the device authorization endpoint (RFC 8628) it may list.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for DeviceEndpoint {}

type Discovered = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type OidcClient<Device> = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    Device,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// The lab's single sign-on settings, parsed.
#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: IssuerUrl,
    pub client_id: ClientId,
    /// `None`: a public client (PKCE alone in the browser flow).
    pub client_secret: Option<ClientSecret>,
    /// The ID token claim whose values map to roles.
    pub role_claim: Option<String>,
    /// Claim value → role.
    pub role_map: Vec<(String, Role)>,
    /// Asked besides `openid email profile`.
    pub extra_scopes: Vec<String>,
    /// The least time between two fetches of the keys for an unknown key id.
    pub jwks_refetch_interval: Duration,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("role_claim", &self.role_claim)
            .field("role_map", &self.role_map)
            .field("jwks_refetch_interval", &self.jwks_refetch_interval)
            .finish()
    }
}

impl OidcConfig {
    /// `None` when no issuer is configured (single sign-on is off).
    pub fn from_args(args: &OidcArgs) -> Result<Option<OidcConfig>, String> {
        let Some(issuer) = &args.oidc_issuer else {
            return Ok(None);
        };
        let issuer = IssuerUrl::new(issuer.trim_end_matches('/').to_owned())
            .map_err(|e| format!("--oidc-issuer {issuer:?}: {e}"))?;
        let client_id = args
            .oidc_client_id
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or("--oidc-issuer needs --oidc-client-id")?;
        let client_secret = match (&args.oidc_client_secret, &args.oidc_client_secret_file) {
            (Some(s), _) if !s.is_empty() => Some(s.0.clone()),
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--oidc-client-secret-file {}: {e}", path.display()))?;
                Some(text.lines().next().unwrap_or("").trim().to_owned()).filter(|s| !s.is_empty())
            }
            _ => None,
        };
        let mut role_map = vec![];
        for entry in &args.oidc_role_map {
            let (value, role) = entry
                .split_once('=')
                .ok_or_else(|| format!("--oidc-role-map {entry:?}: write VALUE=ROLE"))?;
            let role = Role::parse(role.trim())
                .ok_or_else(|| format!("--oidc-role-map {entry:?}: {role:?} is not a role"))?;
            role_map.push((value.trim().to_owned(), role));
        }
        if !role_map.is_empty() && args.oidc_role_claim.is_none() {
            return Err("--oidc-role-map needs --oidc-role-claim".into());
        }
        Ok(Some(OidcConfig {
            issuer,
            client_id: ClientId::new(client_id),
            client_secret: client_secret.map(ClientSecret::new),
            role_claim: args.oidc_role_claim.clone(),
            role_map,
            extra_scopes: args.oidc_scopes.clone(),
            jwks_refetch_interval: args.oidc_jwks_refetch_interval,
        }))
    }
}

/// Who a verified ID token says signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Their client id in the lab.
    pub email: String,
    /// The role `--oidc-role-claim` maps their claims to, if any.
    pub claimed_role: Option<Role>,
}

/// Why a sign-on did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider did not answer, or not as a provider should (retrying may help).
    #[error("the identity provider: {0}")]
    Provider(String),
    /// The provider does not offer what is asked (the device flow).
    #[error("the identity provider has no {0}")]
    Unsupported(&'static str),
    /// The ID token (or what it says) is refused: the reason, for the security log.
    #[error("{0}")]
    Refused(String),
}

/// One poll of a device login at the provider.
#[derive(Debug)]
pub enum DeviceOutcome {
    /// The person approved: who they are.
    Approved(Identity),
    /// RFC 8628's `authorization_pending`, `slow_down`, `access_denied`, `expired_token` or
    /// another error code, as the provider said it.
    NotYet(DeviceCodeErrorResponseType),
}

/// What a device login starts with (the device code stays on the gateways).
#[derive(Debug)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// What a browser sign-in must remember until its callback.
#[derive(Debug)]
pub struct BrowserStart {
    /// Where to send the browser.
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The provider as discovery found it.
struct Provider {
    auth_url: AuthUrl,
    token_url: TokenUrl,
    device_url: Option<DeviceAuthorizationUrl>,
    jwks_url: JsonWebKeySetUrl,
}

/// The lab's identity provider (cheap to clone).
#[derive(Clone)]
pub struct Oidc {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    http: ProviderHttp,
    /// Discovered on first use, then kept.
    provider: Mutex<Option<Arc<Provider>>>,
    /// The provider's signing keys; fetched again on an unknown key id.
    keys: RwLock<CoreJsonWebKeySet>,
    /// When the keys were last fetched again for an unknown key id (`None`: never since
    /// discovery). Held during that fetch, so tokens that arrive together wait for one fetch.
    refetched: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.config.fmt(f)
    }
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Result<Oidc, String> {
        // reqwest is built without a default TLS provider (the app installs ring's; so does this,
        // for whoever builds an `Oidc` first).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // The crate's advice: following redirects opens the client to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| format!("an HTTP client for the identity provider: {e}"))?;
        info!(
            issuer = config.issuer.as_str(),
            client_id = config.client_id.as_str(),
            "single sign-on on"
        );
        Ok(Oidc {
            inner: Arc::new(Inner {
                config,
                http: ProviderHttp(http),
                provider: Mutex::new(None),
                keys: RwLock::new(JsonWebKeySet::default()),
                refetched: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// The provider's endpoints, discovered once (with its keys).
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let mut slot = self.inner.provider.lock().await;
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let found = Discovered::discover_async(self.inner.config.issuer.clone(), &self.inner.http)
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {}", chain(&e))))?;
        let token_url = found
            .token_endpoint()
            .cloned()
            .ok_or_else(|| OidcError::Provider("discovery: no token_endpoint".into()))?;
        let provider = Arc::new(Provider {
            auth_url: found.authorization_endpoint().clone(),
            token_url,
            device_url: found.additional_metadata().device_authorization_endpoint.clone(),
            jwks_url: found.jwks_uri().clone(),
        });
        *self.inner.keys.write().await = found.jwks().clone();
        *slot = Some(provider.clone());
        Ok(provider)
    }

    fn client(&self, p: &Provider) -> OidcClient<EndpointNotSet> {
        let c = &self.inner.config;
        let client = Client::new(c.client_id.clone(), c.issuer.clone(), JsonWebKeySet::default())
            .set_auth_uri(p.auth_url.clone())
            .set_token_uri(p.token_url.clone());
        match &c.client_secret {
            Some(s) => client.set_client_secret(s.clone()),
            None => client,
        }
    }

    fn scopes(&self) -> Vec<Scope> {
        SCOPES
            .iter()
            .map(|s| s.to_string())
            .chain(self.inner.config.extra_scopes.iter().cloned())
            .map(Scope::new)
            .collect()
    }

    /// Asks the provider for a device login (RFC 8628 §3.1).
    pub async fn start_device(&self) -> Result<DeviceStart, OidcError> {
        let p = self.provider().await?;
        let url = p
            .device_url
            .clone()
            .ok_or(OidcError::Unsupported("device authorization endpoint"))?;
        let answer: openidconnect::DeviceAuthorizationResponse<EmptyExtraDeviceAuthorizationFields> = self
            .client(&p)
            .set_device_authorization_url(url)
            .exchange_device_code()
            .add_scopes(self.scopes())
            .request_async(&self.inner.http)
            .await
            .map_err(|e| OidcError::Provider(format!("device authorization: {}", token_error(&e))))?;
        Ok(DeviceStart {
            device_code: answer.device_code().secret().clone(),
            user_code: answer.user_code().secret().clone(),
            verification_uri: answer.verification_uri().to_string(),
            verification_uri_complete: answer.verification_uri_complete().map(|u| u.secret().clone()),
            expires_in: answer.expires_in(),
            interval: answer.interval(),
        })
    }

    /// One poll of a device login (RFC 8628 §3.4). The crate's own poller loops until the
    /// person decides; Testflinger's CLI polls the gateway instead, so each of its polls is one
    /// token request here, read with the crate's types and verified as any ID token.
    pub async fn poll_device(&self, device_code: &str) -> Result<DeviceOutcome, OidcError> {
        let p = self.provider().await?;
        let c = &self.inner.config;
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("device_code", device_code.to_owned()),
        ];
        let mut request = self.inner.http.0.post(p.token_url.url().clone());
        match &c.client_secret {
            // client_secret_basic, with RFC 6749 §2.3.1's form-encoding of both parts.
            Some(secret) => {
                request = request.basic_auth(
                    form_encode(c.client_id.as_str()),
                    Some(form_encode(secret.secret())),
                )
            }
            None => form.push(("client_id", c.client_id.as_str().to_owned())),
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let answer = request
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        let status = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        if status.is_success() {
            let tokens: TokenAnswer = serde_json::from_slice(&body)
                .map_err(|e| OidcError::Provider(format!("token endpoint: not a token answer: {e}")))?;
            // No nonce in the device flow.
            return self
                .identity(&tokens, |_: Option<&Nonce>| Ok(()))
                .await
                .map(DeviceOutcome::Approved);
        }
        let error: DeviceCodeErrorResponse = serde_json::from_slice(&body).map_err(|_| {
            OidcError::Provider(format!("token endpoint answered {status} without an OAuth error"))
        })?;
        Ok(DeviceOutcome::NotYet(error.error().clone()))
    }

    /// Where to send a browser to sign in (authorization code with PKCE S256, state, nonce).
    pub async fn start_browser(&self, redirect: &str) -> Result<BrowserStart, OidcError> {
        let p = self.provider().await?;
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| OidcError::Provider(format!("redirect URI {redirect:?}: {e}")))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&p)
            .set_redirect_uri(redirect)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes())
            .set_pkce_challenge(challenge)
            .url();
        Ok(BrowserStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Trades the browser's code for tokens (with the PKCE verifier) and verifies the ID token
    /// against the nonce the sign-in started with.
    pub async fn finish_browser(
        &self,
        redirect: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let p = self.provider().await?;
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| OidcError::Provider(format!("redirect URI {redirect:?}: {e}")))?;
        let tokens = self
            .client(&p)
            .set_redirect_uri(redirect)
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.inner.http)
            .await
            .map_err(|e| match e {
                // The provider refused the code (replayed, expired, wrong verifier).
                RequestTokenError::ServerResponse(r) => {
                    OidcError::Refused(format!("code refused: {}", r.error()))
                }
                other => OidcError::Provider(format!("token endpoint: {}", token_error(&other))),
            })?;
        let nonce = Nonce::new(nonce.to_owned());
        self.identity(&tokens, &nonce).await
    }

    /// Verifies the answer's ID token (with the keys fetched again if it names one we do not
    /// hold, see [`Oidc::keys_for_unknown_kid`]) and reads who it is.
    async fn identity<N>(&self, tokens: &TokenAnswer, nonce: N) -> Result<Identity, OidcError>
    where
        N: openidconnect::NonceVerifier + Clone,
    {
        let token = tokens
            .id_token()
            .ok_or_else(|| OidcError::Refused("the provider's answer has no ID token".into()))?;
        let verified = {
            let keys = self.inner.keys.read().await.clone();
            token.claims(&self.verifier(keys), nonce.clone()).cloned()
        };
        let claims = match verified {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // Perhaps the provider rotated its keys (or the token is forged).
                let keys = self.keys_for_unknown_kid().await?;
                token.claims(&self.verifier(keys), nonce).cloned()
            }
            other => other,
        }
        .map_err(|e| OidcError::Refused(format!("ID token refused: {}", chain(&e))))?;
        let email = claims
            .email()
            .map(|e| e.as_str().trim().to_owned())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| OidcError::Refused("the ID token has no email claim".into()))?;
        if claims.email_verified() == Some(false) {
            return Err(OidcError::Refused(format!(
                "{email} is not a verified e-mail address"
            )));
        }
        Ok(Identity {
            email,
            claimed_role: self.claimed_role(claims.additional_claims()),
        })
    }

    /// The keys to verify a token naming a key we do not hold: fetched again from the provider,
    /// unless the last such fetch is more recent than `--oidc-jwks-refetch-interval` — then the
    /// keys held, which that fetch brought. One fetch at a time: tokens that arrive together
    /// (a rotation seen by many people at once, or a flood) wait for it and use its keys. A
    /// fetch that fails counts too: a provider in trouble is not asked more often.
    async fn keys_for_unknown_kid(&self) -> Result<CoreJsonWebKeySet, OidcError> {
        let mut last = self.inner.refetched.lock().await;
        let interval = self.inner.config.jwks_refetch_interval;
        if let Some(at) = *last
            && at.elapsed() < interval
        {
            debug!(
                fetched_ago_ms = at.elapsed().as_millis() as u64,
                "unknown key id: the provider's keys were fetched again lately; not again before --oidc-jwks-refetch-interval"
            );
            return Ok(self.inner.keys.read().await.clone());
        }
        *last = Some(Instant::now());
        let p = self.provider().await?;
        let keys = CoreJsonWebKeySet::fetch_async(&p.jwks_url, &self.inner.http)
            .await
            .map_err(|e| OidcError::Provider(format!("keys: {}", chain(&e))))?;
        *self.inner.keys.write().await = keys.clone();
        info!(target: "security", event = "oidc_keys_refetched", "the provider's signing keys were fetched again (unknown key id)");
        Ok(keys)
    }

    fn verifier(&self, keys: CoreJsonWebKeySet) -> IdTokenVerifier<'static, CoreJsonWebKey> {
        let c = &self.inner.config;
        match &c.client_secret {
            Some(secret) => IdTokenVerifier::new_confidential_client(
                c.client_id.clone(),
                secret.clone(),
                c.issuer.clone(),
                keys,
            ),
            None => IdTokenVerifier::new_public_client(c.client_id.clone(), c.issuer.clone(), keys),
        }
    }

    /// The highest role `--oidc-role-map` gives the values of `--oidc-role-claim` (a string or a
    /// list of strings).
    fn claimed_role(&self, claims: &OtherClaims) -> Option<Role> {
        let c = &self.inner.config;
        let values: Vec<&str> = match claims.0.get(c.role_claim.as_deref()?)? {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        c.role_map
            .iter()
            .filter(|(v, _)| values.contains(&v.as_str()))
            .map(|(_, r)| *r)
            .max()
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: &RequestTokenError<RE, T>,
) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => r.to_string(),
        other => chain(other),
    }
}

/// The HTTP client the `openidconnect` crate calls through: the workspace's reqwest (the crate's
/// own adapter is for an older reqwest), redirects off.
#[derive(Clone)]
struct ProviderHttp(reqwest::Client);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let answer = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(chain(&e)))?;
            let mut response = openidconnect::http::Response::builder().status(answer.status());
            if let Some(headers) = response.headers_mut() {
                *headers = answer.headers().clone();
            }
            let body = answer.bytes().await.map_err(|e| HttpError(chain(&e)))?;
            response.body(body.to_vec()).map_err(|e| HttpError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Option<OidcConfig>, String> {
        let mut argv = vec!["flinger-gateway"];
        argv.extend(args);
        let c = crate::Config::try_parse_from(argv).unwrap();
        OidcConfig::from_args(&c.auth.oidc)
    }

    #[test]
    fn single_sign_on_is_off_without_an_issuer_and_needs_a_client_id() {
        assert!(config(&[]).unwrap().is_none());
        assert!(config(&["--oidc-issuer", "http://idp.example"]).is_err());
        let c = config(&[
            "--oidc-issuer",
            "http://idp.example/",
            "--oidc-client-id",
            "flinger",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.issuer.as_str(), "http://idp.example");
        assert!(c.client_secret.is_none(), "a public client");
    }

    #[test]
    fn the_role_map_names_roles_and_needs_a_claim() {
        let base = ["--oidc-issuer", "http://idp", "--oidc-client-id", "f"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend(extra);
            config(&a)
        };
        assert!(with(&["--oidc-role-map", "lab-admins=admin"]).is_err());
        assert!(with(&["--oidc-role-claim", "groups", "--oidc-role-map", "x=boss"]).is_err());
        let c = with(&[
            "--oidc-role-claim",
            "groups",
            "--oidc-role-map",
            "lab-admins=admin,ops=manager",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.role_map,
            vec![("lab-admins".into(), Role::Admin), ("ops".into(), Role::Manager)]
        );
        let oidc = Oidc::new(c).unwrap();
        let claims = |v: Value| OtherClaims(BTreeMap::from([("groups".to_owned(), v)]));
        assert_eq!(
            oidc.claimed_role(&claims(serde_json::json!(["staff", "ops", "lab-admins"]))),
            Some(Role::Admin),
            "the highest role wins"
        );
        assert_eq!(
            oidc.claimed_role(&claims(serde_json::json!("ops"))),
            Some(Role::Manager)
        );
        assert_eq!(oidc.claimed_role(&claims(serde_json::json!(["staff"]))), None);
        assert_eq!(oidc.claimed_role(&OtherClaims::default()), None);
    }

    #[test]
    fn the_client_secret_is_never_shown() {
        let c = config(&[
            "--oidc-issuer",
            "http://idp",
            "--oidc-client-id",
            "f",
            "--oidc-client-secret",
            "hush-123",
        ])
        .unwrap()
        .unwrap();
        assert!(!format!("{c:?}").contains("hush-123"));
        let args = crate::Config::try_parse_from([
            "flinger-gateway",
            "--oidc-issuer",
            "http://idp",
            "--oidc-client-secret",
            "hush-123",
        ])
        .unwrap();
        assert!(!format!("{args:?}").contains("hush-123"));
    }
}
