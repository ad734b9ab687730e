//! The OpenAPI 3.1 document of the whole API, served at `GET /openapi.json`.
//!
//! Every operation is one row of [`operations`]: method, path, who may call it, what it takes
//! and every status it answers. The gateway's test suite checks each answer it gets against
//! this table (an undocumented path, method or status fails the test), that the router serves
//! exactly the paths and methods listed here, and that each row's roles match its own table of
//! Testflinger's role sets, so the document stays true as the API changes.

use serde_json::{Value, json};
use std::sync::OnceLock;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref, RefOr,
    Required, Schema,
};

/// Who may call an operation (see `auth::access`).
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
    fn describe(self) -> &'static str {
        match self {
            Who::Public => "Anyone; no token.",
            Who::Submitter => {
                "Roles: admin, manager, contributor (anonymous callers act as contributors when the lab allows anonymous use)."
            }
            Who::Agent => "Role: agent (anonymous callers too when the lab allows anonymous agents).",
            Who::AgentData => "Roles: admin, manager, agent.",
            Who::Anyone => "Roles: admin, manager, contributor, agent (and anonymous callers when allowed).",
            Who::Manager => "Roles: admin, manager.",
            Who::Admin => "Role: admin.",
        }
    }
}

/// What an operation takes or answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    /// JSON with the named component schema.
    Json(&'static str),
    Text,
    /// A tar.gz archive.
    Archive,
    /// `multipart/form-data` with the archive in `file` (or the archive as the raw body).
    Upload,
}

/// One operation of the API.
#[derive(Clone, Debug)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub who: Who,
    pub body: Body,
    /// Query parameters, `name` or `name*` when repeatable.
    pub query: &'static [&'static str],
    /// Every status it answers, with the body of each.
    pub responses: Vec<(u16, Body)>,
}

const E: Body = Body::Json("Error");
const V: Body = Body::Json("ValidationError");

fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    who: Who,
    body: Body,
    responses: &[(u16, Body)],
) -> Op {
    let mut all: Vec<(u16, Body)> = responses.to_vec();
    let mut add = |code: u16, b: Body| {
        if !all.iter().any(|(c, _)| *c == code) {
            all.push((code, b));
        }
    };
    if who != Who::Public {
        add(401, E);
        add(403, E);
    }
    if path.contains("{job_id}") {
        add(400, E);
    }
    if body != Body::None {
        add(413, E);
    }
    if matches!(body, Body::Json(_)) {
        add(400, E);
        add(422, V);
    }
    add(500, E);
    add(503, E);
    all.sort_by_key(|(c, _)| *c);
    Op {
        method,
        path,
        tag,
        summary,
        who,
        body,
        query: &[],
        responses: all,
    }
}

impl Op {
    fn query(mut self, q: &'static [&'static str]) -> Op {
        self.query = q;
        self
    }
}

/// Every operation of the API.
pub fn operations() -> Vec<Op> {
    use Body::*;
    use Who::*;
    let ok_text = (200, Text);
    vec![
        // ----- health
        op(
            "get",
            "/v1",
            "health",
            "Banner with the version (agents' health check)",
            Public,
            None,
            &[ok_text],
        ),
        op("get", "/healthz", "health", "Liveness", Public, None, &[ok_text]),
        op(
            "get",
            "/readyz",
            "health",
            "Readiness of the store and the broker",
            Public,
            None,
            &[(200, Json("Readiness")), (503, Json("Readiness"))],
        ),
        op(
            "post",
            "/oidc/auth-init",
            "health",
            "OIDC device flow: not configured, always 404",
            Public,
            None,
            &[(404, E)],
        ),
        op(
            "get",
            "/openapi.json",
            "health",
            "This document",
            Public,
            None,
            &[(200, Json("Object"))],
        ),
        // ----- jobs
        op(
            "post",
            "/v1/job",
            "jobs",
            "Submit a job (a known job_id is a resubmission)",
            Submitter,
            Json("JobFile"),
            &[(200, Json("JobId"))],
        ),
        op(
            "get",
            "/v1/job",
            "jobs",
            "Testflinger's pull dispatch: Flinger dispatches over the broker, so always 204",
            Agent,
            None,
            &[(204, None), (400, E)],
        )
        .query(&["queue*"]),
        op(
            "get",
            "/v1/job/search",
            "jobs",
            "Search jobs by tags and state",
            Submitter,
            None,
            &[(200, Json("JobSearch")), (422, V)],
        )
        .query(&["tags*", "match", "state*"]),
        op(
            "get",
            "/v1/job/{job_id}",
            "jobs",
            "The job file as submitted, plus job_id; 204 if unknown",
            Submitter,
            None,
            &[(200, Json("JobFile")), (204, None)],
        ),
        op(
            "post",
            "/v1/job/{job_id}/action",
            "jobs",
            "Cancel a job ({\"action\": \"cancel\"}); only its submitter, a manager or an admin",
            Submitter,
            Json("Action"),
            &[ok_text],
        ),
        op(
            "get",
            "/v1/job/{job_id}/position",
            "jobs",
            "0-based place among waiting jobs of its queue; 410 once started",
            Submitter,
            None,
            &[ok_text, (204, None), (410, E)],
        ),
        op(
            "get",
            "/v1/job/{job_id}/info",
            "jobs",
            "[ext] The whole job record",
            Submitter,
            None,
            &[(200, Json("JobInfo")), (204, None)],
        ),
        op(
            "get",
            "/v1/job/{job_id}/estimate",
            "jobs",
            "[ext] Position and ETA of a waiting job",
            Submitter,
            None,
            &[(200, Json("Estimate")), (204, None), (410, E)],
        ),
        op(
            "post",
            "/v1/job/{job_id}/attachments",
            "jobs",
            "Upload the job's attachments archive; the job is then dispatched",
            Submitter,
            Upload,
            &[ok_text, (404, E), (409, E), (413, E), (422, V)],
        ),
        op(
            "get",
            "/v1/job/{job_id}/attachments",
            "jobs",
            "Download the job's attachments archive; 204 if none",
            Agent,
            None,
            &[(200, Archive), (204, None)],
        ),
        op(
            "post",
            "/v1/job/{job_id}/events",
            "jobs",
            "Relay an agent's status update to the job's webhook (in the background)",
            Agent,
            Json("StatusUpdate"),
            &[ok_text, (404, E)],
        ),
        op(
            "get",
            "/v1/job/{job_id}/reservation",
            "jobs",
            "[ext] A reserved device: where and until when",
            Submitter,
            None,
            &[(200, Json("Object")), (204, None), (404, E)],
        ),
        op(
            "post",
            "/v1/job/{job_id}/reservation/extend",
            "jobs",
            "[ext] Move a reservation's deadline ({\"by\": \"1h\"} or {\"until\": datetime})",
            Submitter,
            Json("Extend"),
            &[(200, Json("Object")), (404, E), (409, E)],
        ),
        // ----- results
        op(
            "get",
            "/v1/result/{job_id}",
            "results",
            "Flat results of the current attempt; 204 if the job is unknown",
            Anyone,
            None,
            &[(200, Json("Results")), (204, None)],
        ),
        op(
            "post",
            "/v1/result/{job_id}",
            "results",
            "Merge results posted by an agent (Testflinger's agents)",
            Agent,
            Json("ResultPost"),
            &[ok_text, (404, E), (413, E)],
        ),
        op(
            "get",
            "/v1/result/{job_id}/log/{log_type}",
            "results",
            "Output or serial log by phase, filtered; [ext] long poll with wait",
            Submitter,
            None,
            &[(200, Json("Logs")), (204, None), (404, E), (422, V)],
        )
        .query(&["start_fragment", "start_timestamp", "phase", "wait"]),
        op(
            "post",
            "/v1/result/{job_id}/log/{log_type}",
            "results",
            "One log fragment from an agent",
            Agent,
            Json("LogFragment"),
            &[ok_text, (404, E)],
        ),
        op(
            "post",
            "/v1/result/{job_id}/artifact",
            "results",
            "Upload the job's artifacts archive",
            Agent,
            Upload,
            &[ok_text, (404, E), (413, E), (422, V)],
        ),
        op(
            "get",
            "/v1/result/{job_id}/artifact",
            "results",
            "Download the job's artifacts archive; 204 if none",
            Submitter,
            None,
            &[(200, Archive), (204, None)],
        ),
        // ----- agents and queues
        op(
            "get",
            "/v1/agents/data",
            "agents",
            "Every agent",
            Submitter,
            None,
            &[(200, Json("Agents"))],
        ),
        op(
            "get",
            "/v1/agents/data/{name}",
            "agents",
            "One agent; 404 if unknown",
            Anyone,
            None,
            &[(200, Json("Agent")), (404, E)],
        ),
        op(
            "post",
            "/v1/agents/data/{name}",
            "agents",
            "Admins: set an agent's state; agents: report about themselves",
            AgentData,
            Json("AgentIn"),
            &[(200, Json("Status")), (404, E), (409, E)],
        ),
        op(
            "post",
            "/v1/agents/provision_logs/{name}",
            "agents",
            "Record a provisioning result (history and streak)",
            Agent,
            Json("ProvisionLogIn"),
            &[ok_text, (404, E)],
        ),
        op(
            "get",
            "/v1/agents/provision_logs/{name}",
            "agents",
            "[ext] An agent's provisioning history and streak",
            Submitter,
            None,
            &[(200, Json("Object")), (404, E)],
        ),
        op(
            "get",
            "/v1/agents/queues",
            "queues",
            "Queues agents serve or advertised, with descriptions",
            Submitter,
            None,
            &[(200, Json("StringMap"))],
        ),
        op(
            "post",
            "/v1/agents/queues",
            "queues",
            "Advertise queue descriptions",
            AgentData,
            Json("StringMap"),
            &[ok_text],
        ),
        op(
            "get",
            "/v1/agents/images/{queue}",
            "queues",
            "Images of a queue ({} if none)",
            Submitter,
            None,
            &[(200, Json("StringMap"))],
        ),
        op(
            "post",
            "/v1/agents/images",
            "queues",
            "Set queues' images",
            AgentData,
            Json("Object"),
            &[ok_text],
        ),
        op(
            "get",
            "/v1/queues/wait_times",
            "queues",
            "Wait-time percentiles per queue (last 7 days)",
            Submitter,
            None,
            &[(200, Json("WaitTimes"))],
        )
        .query(&["queue*"]),
        op(
            "get",
            "/v1/queues/{queue}/agents",
            "queues",
            "Agents serving a queue; 404 if no agent serves it",
            Submitter,
            None,
            &[(200, Json("Agents")), (404, E)],
        ),
        op(
            "get",
            "/v1/queues/{queue}/jobs",
            "queues",
            "Jobs of a queue (last 7 days); 204 if none",
            Submitter,
            None,
            &[(200, Json("QueueJobs")), (204, None)],
        ),
        // ----- access control
        op(
            "post",
            "/v1/oauth2/token",
            "auth",
            "HTTP Basic client credentials for an access token and a refresh token",
            Public,
            None,
            &[(200, Json("Token")), (401, E)],
        ),
        op(
            "post",
            "/v1/oauth2/refresh",
            "auth",
            "A new access token for a refresh token",
            Public,
            Json("RefreshToken"),
            &[(200, Json("Token")), (400, E)],
        ),
        op(
            "post",
            "/v1/oauth2/revoke",
            "auth",
            "Revoke a refresh token",
            Admin,
            Json("RefreshToken"),
            &[(200, Json("Status")), (400, E)],
        ),
        op(
            "get",
            "/v1/client-permissions",
            "auth",
            "Every client and its permissions",
            Manager,
            None,
            &[(200, Json("Clients"))],
        ),
        op(
            "get",
            "/v1/client-permissions/{client_id}",
            "auth",
            "One client",
            Manager,
            None,
            &[(200, Json("Client")), (404, E)],
        ),
        op(
            "put",
            "/v1/client-permissions/{client_id}",
            "auth",
            "Create or update a client (secrets are stored hashed; managers: only clients ranked below them, or themselves)",
            Manager,
            Json("ClientIn"),
            &[ok_text, (400, E)],
        ),
        op(
            "delete",
            "/v1/client-permissions/{client_id}",
            "auth",
            "Delete a client (managers: only clients ranked below them, or themselves)",
            Manager,
            None,
            &[ok_text, (404, E), (422, V)],
        ),
        op(
            "get",
            "/v1/restricted-queues",
            "auth",
            "Restricted queues and their owners",
            Manager,
            None,
            &[(200, Json("RestrictedQueues"))],
        ),
        op(
            "get",
            "/v1/restricted-queues/{queue}",
            "auth",
            "One restricted queue; 404 if not restricted",
            Manager,
            None,
            &[(200, Json("RestrictedQueue")), (404, E)],
        ),
        op(
            "post",
            "/v1/restricted-queues/{queue}",
            "auth",
            "Restrict a queue and add an owner",
            Manager,
            Json("Owner"),
            &[ok_text, (404, E)],
        ),
        op(
            "delete",
            "/v1/restricted-queues/{queue}",
            "auth",
            "Remove an owner (the last one lifts the restriction)",
            Manager,
            Json("Owner"),
            &[ok_text, (404, E)],
        ),
        op(
            "put",
            "/v1/secrets/{client_id}/{path}",
            "auth",
            "Write one of your secrets (write-only; path may contain /)",
            Submitter,
            Json("SecretIn"),
            &[(200, Json("SecretOut"))],
        ),
        op(
            "delete",
            "/v1/secrets/{client_id}/{path}",
            "auth",
            "Delete one of your secrets",
            Submitter,
            None,
            &[ok_text, (404, E), (422, V)],
        ),
    ]
}

/// The component schemas the operations name.
fn schemas() -> Vec<(&'static str, Value)> {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let agent = json!({"type": "object", "required": ["name", "state", "queues"], "properties": {
        "name": {"type": "string"}, "state": {"type": "string"},
        "queues": {"type": "array", "items": {"type": "string"}},
        "location": {"type": "string"}, "provision_type": {"type": "string"}, "job_id": {"type": "string"},
        "comment": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
        "restricted_to": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "provision_streak_type": {"type": "string"}, "provision_streak_count": {"type": "integer"}}});
    let phase_log = json!({"type": "object", "required": ["last_fragment_number", "log_data"], "properties": {
        "last_fragment_number": {"type": "integer"}, "log_data": {"type": "string"}}});
    let client = json!({"type": "object", "required": ["client_id", "role"], "properties": {
        "client_id": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "manager", "contributor", "agent"]},
        "max_priority": {"type": "object", "additionalProperties": {"type": "integer"}},
        "max_reservation_time": {"type": "object", "additionalProperties": {"type": "integer"}},
        "allowed_queues": {"type": "array", "items": {"type": "string"}},
        "email": {"type": ["string", "null"]}}});
    let restricted = json!({"type": "object", "required": ["queue", "owners"], "properties": {
        "queue": {"type": "string"}, "owners": {"type": "array", "items": {"type": "string"}}}});
    vec![
        ("Object", json!({"type": "object"})),
        ("StringMap", string_map),
        (
            "Error",
            json!({"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}),
        ),
        (
            "ValidationError",
            json!({"type": "object", "required": ["message", "detail"], "properties": {
            "message": {"type": "string", "const": "Validation error"},
            "detail": {"type": "object", "description": "{\"json\" | \"query\": {field: [messages] or nested}}"}}}),
        ),
        (
            "Readiness",
            json!({"type": "object", "properties": {"store": {"type": "string"}, "broker": {"type": "string"}}}),
        ),
        (
            "JobFile",
            json!({"type": "object", "required": ["job_queue"], "description": "Testflinger's job file (see docs/api.md)", "properties": {
            "job_id": {"type": "string", "format": "uuid"}, "job_queue": {"type": "string"}, "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}, "job_priority": {"type": "integer"},
            "global_timeout": {"type": "integer"}, "output_timeout": {"type": "integer"}, "allocation_timeout": {"type": "integer"},
            "exclude_agents": {"type": "array", "items": {"type": "string"}}, "job_status_webhook": {"type": "string"},
            "provision_data": {"type": "object"}, "firmware_update_data": {"type": "object"}, "test_data": {"type": "object"},
            "allocate_data": {"type": "object"}, "reserve_data": {"type": "object"}, "parent_job_id": {"type": "string"},
            "debug": {"type": "boolean"}}}),
        ),
        (
            "JobId",
            json!({"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string", "format": "uuid"}}}),
        ),
        (
            "Action",
            json!({"type": "object", "required": ["action"], "properties": {"action": {"type": "string", "const": "cancel"}}}),
        ),
        (
            "JobSearch",
            json!({"type": "array", "items": {"type": "object", "required": ["job_id", "created_at", "job_state"], "properties": {
            "job_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}, "job_state": {"type": "string"}}}}),
        ),
        (
            "JobInfo",
            json!({"type": "object", "required": ["job_id", "state", "job_state"], "description": "See docs/api.md"}),
        ),
        (
            "Estimate",
            json!({"type": "object", "required": ["position", "eta_seconds", "basis"], "properties": {
            "position": {"type": "integer"}, "eta_seconds": {"type": ["integer", "null"]}, "eta": {"type": ["string", "null"]},
            "agents_available": {"type": "integer"}, "agents_busy": {"type": "integer"}, "recent_runs": {"type": "integer"},
            "median_run_seconds": {"type": ["integer", "null"]}, "basis": {"type": "string"}}}),
        ),
        (
            "StatusUpdate",
            json!({"type": "object", "required": ["job_status_webhook"], "properties": {
            "agent_id": {"type": "string"}, "job_queue": {"type": "string"}, "job_status_webhook": {"type": "string"},
            "events": {"type": "array", "items": {"type": "object", "properties": {
                "event_name": {"type": "string"}, "timestamp": {"type": "string"}, "detail": {"type": "string"}}}}}}),
        ),
        (
            "Extend",
            json!({"type": "object", "properties": {"by": {"type": ["string", "integer"]}, "until": {"type": "string", "format": "date-time"}}}),
        ),
        (
            "Results",
            json!({"type": "object", "required": ["job_state"], "description": "job_state, <phase>_status, <phase>_output, <phase>_serial, device_info; [ext] state, failure, attempt",
            "properties": {"job_state": {"type": "string"}, "device_info": {"type": "object"}, "state": {"type": "string"}, "attempt": {"type": "integer"}},
            "additionalProperties": true}),
        ),
        (
            "ResultPost",
            json!({"type": "object", "properties": {
            "status": {"type": "object", "additionalProperties": {"type": "integer"}},
            "device_info": {"type": "object"}, "job_state": {"type": "string"}}}),
        ),
        (
            "Logs",
            json!({"type": "object", "description": "{\"output\" | \"serial\": {phase: PhaseLog}}",
            "additionalProperties": {"type": "object", "additionalProperties": phase_log}}),
        ),
        (
            "LogFragment",
            json!({"type": "object", "required": ["fragment_number", "timestamp", "phase", "log_data"], "properties": {
            "fragment_number": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
            "phase": {"type": "string"}, "log_data": {"type": "string"}}}),
        ),
        ("Agent", agent.clone()),
        ("Agents", json!({"type": "array", "items": agent})),
        (
            "AgentIn",
            json!({"type": "object", "properties": {
            "state": {"type": "string"}, "comment": {"type": "string"}, "queues": {"type": "array", "items": {"type": "string"}},
            "location": {"type": "string"}, "provision_type": {"type": "string"}, "job_id": {"type": "string"}}}),
        ),
        (
            "Status",
            json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "const": "OK"}}}),
        ),
        (
            "ProvisionLogIn",
            json!({"type": "object", "required": ["job_id", "exit_code"], "properties": {
            "job_id": {"type": "string"}, "exit_code": {"type": "integer"}, "detail": {"type": "string"}}}),
        ),
        (
            "WaitTimes",
            json!({"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}}}),
        ),
        (
            "QueueJobs",
            json!({"type": "array", "items": {"type": "object", "required": ["job_id", "created_at", "job_state", "job_queue"]}}),
        ),
        (
            "Token",
            json!({"type": "object", "required": ["access_token", "token_type", "expires_in"], "properties": {
            "access_token": {"type": "string"}, "token_type": {"type": "string", "const": "Bearer"}, "expires_in": {"type": "integer"},
            "refresh_token": {"type": "string"}}}),
        ),
        (
            "RefreshToken",
            json!({"type": "object", "required": ["refresh_token"], "properties": {"refresh_token": {"type": "string"}}}),
        ),
        ("Client", client.clone()),
        ("Clients", json!({"type": "array", "items": client})),
        (
            "ClientIn",
            json!({"type": "object", "properties": {
            "client_secret": {"type": "string", "minLength": 15}, "role": {"type": "string"},
            "max_priority": {"type": "object", "additionalProperties": {"type": "integer"}},
            "max_reservation_time": {"type": "object", "additionalProperties": {"type": "integer"}},
            "email": {"type": "string"}}}),
        ),
        ("RestrictedQueue", restricted.clone()),
        ("RestrictedQueues", json!({"type": "array", "items": restricted})),
        (
            "Owner",
            json!({"type": "object", "required": ["client_id"], "properties": {"client_id": {"type": "string"}}}),
        ),
        (
            "SecretIn",
            json!({"type": "object", "required": ["value"], "properties": {
            "value": {"type": "string", "minLength": 1}, "expire_after": {"type": "integer", "minimum": 1},
            "ephemeral": {"type": "boolean"}}}),
        ),
        (
            "SecretOut",
            json!({"type": "object", "properties": {"expires_at": {"type": ["string", "null"], "format": "date-time"}}}),
        ),
    ]
}

fn content(body: Body) -> Option<(&'static str, Content)> {
    let schema = |name: &str| Content::new(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(name))));
    let raw = |v: Value| Content::new(Some(serde_json::from_value::<Schema>(v).expect("a valid schema")));
    match body {
        Body::None => None,
        Body::Json(name) => Some(("application/json", schema(name))),
        Body::Text => Some(("text/plain", raw(json!({"type": "string"})))),
        Body::Archive => Some((
            "application/gzip",
            raw(json!({"type": "string", "format": "binary"})),
        )),
        Body::Upload => Some((
            "multipart/form-data",
            raw(
                json!({"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}),
            ),
        )),
    }
}

fn method(m: &str) -> HttpMethod {
    match m {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "delete" => HttpMethod::Delete,
        other => panic!("no method {other} in the API"),
    }
}

fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut items: Vec<(&'static str, PathItem)> = vec![];
    for o in operations() {
        let mut b = OperationBuilder::new()
            .tag(o.tag)
            .summary(Some(o.summary))
            .description(Some(o.who.describe()))
            .operation_id(Some(format!("{} {}", o.method, o.path)));
        for segment in o.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                b = b.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(
                            serde_json::from_value::<Schema>(json!({"type": "string"})).expect("schema"),
                        )),
                );
            }
        }
        for q in o.query {
            let (name, many) = q.strip_suffix('*').map_or((*q, false), |n| (n, true));
            let schema = if many {
                json!({"type": "array", "items": {"type": "string"}})
            } else {
                json!({"type": "string"})
            };
            b = b.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .schema(Some(serde_json::from_value::<Schema>(schema).expect("schema"))),
            );
        }
        if let Some((ct, c)) = content(o.body) {
            let mut rb = RequestBodyBuilder::new()
                .content(ct, c)
                .required(Some(Required::True));
            if o.body == Body::Upload
                && let Some((_, raw)) = content(Body::Archive)
            {
                rb = rb.content("application/gzip", raw);
            }
            b = b.request_body(Some(rb.build()));
        }
        for (code, body) in &o.responses {
            let mut r = ResponseBuilder::new().description(status_text(*code));
            if let Some((ct, c)) = content(*body) {
                r = r.content(ct, c);
            }
            b = b.response(code.to_string(), r.build());
        }
        if o.who != Who::Public {
            b = b.security(utoipa::openapi::security::SecurityRequirement::new::<
                &str,
                [&str; 0],
                &str,
            >("bearer", []));
        }
        let item = PathItem::new(method(o.method), b.build());
        match items.iter_mut().find(|(p, _)| *p == o.path) {
            Some((_, existing)) => existing.merge_operations(item),
            None => items.push((o.path, item)),
        }
    }
    for (p, item) in items {
        paths = paths.path(p, item);
    }
    let mut components = ComponentsBuilder::new().security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (name, schema) in schemas() {
        components = components.schema(
            name,
            serde_json::from_value::<Schema>(schema).expect("a valid schema"),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Flinger")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Testflinger's REST API v1, served by Flinger's gateway, plus extensions marked [ext]. See docs/api.md.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No content (unknown job, nothing stored, or nothing to give)",
        400 => "Bad request (malformed JSON, a job id that is not a UUID, a refused command)",
        401 => "Authentication required, or the token expired",
        403 => "Not allowed for this caller (role, ownership, permissions), or an invalid token",
        404 => "Not found",
        409 => "Conflict with the job's state",
        410 => "Gone: the job is no longer waiting",
        413 => "Too large",
        422 => "Validation error: detail names every bad field",
        500 => "Internal error",
        503 => "A dependency (store, broker, scheduler) did not answer; retry",
        _ => "",
    }
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses() {
        for (name, v) in schemas() {
            assert!(serde_json::from_value::<Schema>(v.clone()).is_ok(), "{name}: {v}");
        }
    }

    #[test]
    fn the_document_builds_and_names_every_operation_once() {
        let doc = serde_json::to_value(document()).unwrap();
        let ops = operations();
        let mut seen = std::collections::BTreeSet::new();
        for o in &ops {
            assert!(seen.insert((o.method, o.path)), "{} {} twice", o.method, o.path);
            assert!(
                doc["paths"][o.path][o.method].is_object(),
                "{} {}",
                o.method,
                o.path
            );
        }
        for name in ["Error", "ValidationError", "JobFile", "Token"] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }
}
