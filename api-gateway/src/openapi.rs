//! The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`, derived from the
//! code: the handlers' `#[utoipa::path]` attributes (method, path, roles, statuses, bodies) and
//! the `ToSchema` derives of the bodies in `flinger_api`.
//!
//! What every operation has in common is added here, once ([`Common`]): 401 and 403 where a
//! token is needed, 429 where a client's limits apply (all but the health probes), 400 for a `{job_id}` that is not a UUID, 400/413/422 for a JSON body, 500
//! and 503 everywhere, the path parameters, and who may call it (the `bearer` requirement's
//! roles, as OpenAPI 3.1 allows for non-OAuth schemes).
//!
//! The gateway's test suite checks every answer it gets against this document (an undocumented
//! path, method or status, or a JSON body that does not match its schema, fails the test), that
//! the router serves exactly the operations listed here, and that each one's roles match its own
//! table of Testflinger's role sets: so the document stays true as the API changes.

use crate::routes::{
    admin, agents, auth, blobs, health, job_events, jobs, oidc, queues, reservation, results, secrets,
};
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, Schema, Type};
use utoipa::{Modify, PartialSchema, ToSchema};

/// Who may call an operation (see `auth::access`), as the roles of its `bearer` requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// No token needed, none checked.
    Public,
    /// admin, manager, contributor (anonymous users when the lab allows anonymous use).
    Submitter,
    /// agent (anonymous too with `--allow-anonymous-agents`).
    Agent,
    /// admin, manager, agent.
    AgentData,
    /// every role.
    Anyone,
    /// admin, manager.
    Manager,
    Admin,
}

impl Who {
    /// From the roles an operation's `security(("bearer" = [...]))` names.
    fn from_roles(roles: Option<&[String]>) -> Who {
        let Some(roles) = roles else { return Who::Public };
        match roles.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["admin", "manager", "contributor"] => Who::Submitter,
            ["agent"] => Who::Agent,
            ["admin", "manager", "agent"] => Who::AgentData,
            ["admin", "manager", "contributor", "agent"] => Who::Anyone,
            ["admin", "manager"] => Who::Manager,
            ["admin"] => Who::Admin,
            other => panic!("no role set {other:?} in the API"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Who::Public => "Anyone; no token.",
            Who::Submitter => {
                "Roles: admin, manager, contributor (anonymous callers act as contributors when the lab allows anonymous use, which single sign-on turns off)."
            }
            Who::Agent => {
                "Role: agent (anonymous callers too when the lab allows anonymous agents, which single sign-on turns off)."
            }
            Who::AgentData => "Roles: admin, manager, agent.",
            Who::Anyone => {
                "Roles: admin, manager, contributor, agent (and anonymous callers when allowed: never with single sign-on)."
            }
            Who::Manager => "Roles: admin, manager.",
            Who::Admin => "Role: admin.",
        }
    }
}

/// One operation of the document, as the tests walk them.
#[derive(Clone)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub who: Who,
    /// Every status it answers.
    pub responses: Vec<u16>,
    /// The operation itself.
    pub operation: &'static Operation,
}

/// A tar.gz archive (attachments, artifacts).
pub struct Archive;

impl PartialSchema for Archive {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Archive {}

/// An upload: `multipart/form-data` with the archive in `file` (or the archive as the raw body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Upload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Flinger",
        description = "Testflinger's REST API v1, served by Flinger's gateway, plus extensions marked [ext]. See docs/api.md."
    ),
    paths(
        health::banner,
        health::healthz,
        health::readyz,
        health::openapi,
        jobs::submit_job,
        jobs::pull_job,
        jobs::search_jobs,
        jobs::get_job,
        jobs::job_action,
        jobs::job_position,
        jobs::job_info,
        jobs::job_estimate,
        blobs::post_attachments,
        blobs::get_attachments,
        job_events::post_events,
        reservation::reservation,
        reservation::extend,
        results::get_results,
        results::post_results,
        results::get_log,
        results::post_log,
        blobs::post_artifact,
        blobs::get_artifact,
        agents::list_agents,
        agents::get_agent,
        agents::post_agent,
        agents::post_provision_log,
        agents::get_provision_log,
        queues::list_queues,
        queues::advertise_queues,
        queues::queue_images,
        queues::set_images,
        queues::wait_times,
        queues::queue_agents,
        queues::queue_jobs,
        auth::issue,
        auth::refresh,
        auth::revoke,
        oidc::auth_init,
        oidc::auth_poll,
        admin::list_clients,
        admin::get_client,
        admin::put_client,
        admin::delete_client,
        admin::revoke_tokens,
        admin::list_restricted,
        admin::get_restricted,
        admin::add_owner,
        admin::remove_owner,
        admin::retention,
        secrets::put_secret,
        secrets::delete_secret,
    ),
    components(schemas(flinger_api::Error, flinger_api::ValidationError)),
    modifiers(&Common),
    tags(
        (name = "health"),
        (name = "jobs"),
        (name = "results"),
        (name = "agents"),
        (name = "queues"),
        (name = "auth"),
    )
)]
struct ApiDoc;

/// What every operation has in common (see the module's doc).
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
            ] {
                if let Some(op) = op {
                    complete(method, path, op);
                }
            }
        }
    }
}

/// The roles of an operation's `bearer` requirement; `None` when it needs no token.
fn roles(op: &Operation) -> Option<Vec<String>> {
    let requirement = op.security.as_ref()?.first()?;
    let value = serde_json::to_value(requirement).expect("a security requirement serializes");
    serde_json::from_value(value.get("bearer")?.clone()).ok()
}

fn complete(method: &str, path: &str, op: &mut Operation) {
    let who = Who::from_roles(roles(op).as_deref());
    op.description = Some(who.describe().to_owned());
    op.operation_id = Some(format!("{method} {path}"));
    // Path parameters, from the template.
    let params = op.parameters.get_or_insert_with(Vec::new);
    for segment in path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
            && !params.iter().any(|p| p.name == name)
        {
            params.push(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema()))
                    .build(),
            );
        }
    }
    let body = op.request_body.as_ref();
    let has_body = body.is_some();
    let json_body = body.is_some_and(|b| b.content.contains_key("application/json"));
    let mut add = |code: u16, schema: &str| {
        op.responses.responses.entry(code.to_string()).or_insert_with(|| {
            let content = ContentBuilder::new()
                .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(schema))))
                .build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(status_text(code))
                    .content("application/json", content)
                    .build(),
            )
        });
    };
    if who != Who::Public {
        add(401, "Error");
        add(403, "Error");
    }
    if path.contains("{job_id}") {
        add(400, "Error");
    }
    if has_body {
        add(413, "Error");
    }
    if !crate::limits::unlimited_operation(path) {
        add(429, "Error");
    }
    if json_body {
        add(400, "Error");
        add(422, "ValidationError");
    }
    add(500, "Error");
    add(503, "Error");
    if let Some(RefOr::T(r)) = op.responses.responses.get_mut("429") {
        r.headers.insert(
            "Retry-After".into(),
            HeaderBuilder::new()
                .schema(u64::schema())
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    for (code, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = response
            && r.description.is_empty()
        {
            r.description = status_text(code.parse().unwrap_or(0)).to_owned();
        }
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No content (unknown job, nothing stored, or nothing to give)",
        400 => "Bad request (malformed JSON, a job id that is not a UUID, a refused command)",
        401 => {
            "Authentication required (an anonymous caller, refused whenever the lab has single sign-on or does not allow anonymous use), or the token expired"
        }
        403 => "Not allowed for this caller (role, ownership, permissions), or an invalid token",
        404 => "Not found",
        409 => "Conflict with the job's state",
        410 => "Gone: the job is no longer waiting",
        413 => "Too large",
        422 => "Validation error: detail names every bad field",
        429 => "Too many requests from this client: retry after the Retry-After header's seconds",
        500 => "Internal error",
        503 => "A dependency (store, broker, scheduler) did not answer; retry",
        _ => "",
    }
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc
    })
}

/// Every operation of the document.
pub fn operations() -> Vec<Op> {
    let mut ops = vec![];
    for (path, item) in &document().paths.paths {
        for (method, op) in [
            ("get", &item.get),
            ("put", &item.put),
            ("post", &item.post),
            ("delete", &item.delete),
        ] {
            if let Some(operation) = op {
                ops.push(Op {
                    method,
                    path: path.as_str(),
                    who: Who::from_roles(roles(operation).as_deref()),
                    responses: operation
                        .responses
                        .responses
                        .keys()
                        .filter_map(|c| c.parse().ok())
                        .collect(),
                    operation,
                });
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_operation_once_with_its_common_answers() {
        let doc = serde_json::to_value(document()).unwrap();
        let ops = operations();
        let mut seen = std::collections::BTreeSet::new();
        for o in &ops {
            assert!(seen.insert((o.method, o.path)), "{} {} twice", o.method, o.path);
            assert!(
                o.responses.contains(&500) && o.responses.contains(&503),
                "{} {}",
                o.method,
                o.path
            );
            if o.who != Who::Public {
                assert!(o.responses.contains(&401), "{} {}", o.method, o.path);
            }
        }
        assert!(ops.len() >= 49, "{} operations", ops.len());
        for name in ["Error", "ValidationError", "JobFile", "Token", "JobInfo", "Agent"] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
        let info = &doc["paths"]["/v1/job/{job_id}/info"]["get"];
        assert_eq!(info["parameters"][0]["name"], "job_id");
        assert_eq!(
            info["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/JobInfo"
        );
    }
}
