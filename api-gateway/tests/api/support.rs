//! The shared harness: [`TestApp::spawn`] starts a gateway on port 0 with a fresh SQLite store
//! and a unique broker namespace, and gives the test an HTTP client, direct store access (to
//! write what the scheduler and agents would) and an AMQP channel (to see what was published).
//!
//! Every answer a test gets through [`TestApp::send`] (and the `get`/`post_*` helpers) is
//! checked against the OpenAPI document (`flinger_gateway::openapi`): a path, method or status
//! the document does not list fails the test, and so does a JSON body that does not match the
//! schema the document gives for it. That is what keeps the document true.

use broker_schema::messages::{
    AgentState, Heartbeat, LogStream, SchedulerReply, SchedulerRequest, Submission,
};
use broker_schema::service::BrokerArgs;
use broker_schema::{AgentName, DeviceClass, JobDefinition, Millis, Names, Phase, topology};
use flinger_gateway::openapi;
use flinger_gateway::{App, Config, StartError};
use flinger_store::{DynSchedulerStore, JobRecord, OutputFragment, StoreConfig};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn broker_url() -> String {
    std::env::var("FLINGER_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

static INIT: Once = Once::new();

/// Everything the gateways of this test binary logged (at debug level), for tests that check
/// what must never be logged. With `FLINGER_LOG` set it is also printed.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

pub fn logged() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("FLINGER_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init() {
    INIT.call_once(|| {
        // reqwest is built without a default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,flinger_gateway=debug,flinger_scheduler=debug,tower_http=debug,lapin::returned_messages=error",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// The bootstrap admin every test gateway starts with.
pub const ADMIN_ID: &str = "lab-admin";
pub const ADMIN_SECRET: &str = "admin-secret-for-tests";
/// The signing key of every test gateway (tests forge expired tokens with it).
pub const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// The same store the gateway uses, opened separately with the scheduler's rights: tests
    /// play the scheduler's part where they need to.
    pub store: DynSchedulerStore,
    pub names: Names,
    pub channel: Channel,
    connection: Connection,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), StartError>>,
    classes: Mutex<Vec<DeviceClass>>,
    _dir: TempDir,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a gateway after `tweak` has adjusted its configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        init();
        let dir = tempfile::tempdir().expect("temp dir");
        let store_config =
            StoreConfig::parse(&format!("sqlite:{}", dir.path().join("flinger.db").display())).unwrap();
        let namespace = format!("t-{}", Uuid::new_v4().simple());
        let broker = BrokerArgs {
            url: broker_url(),
            namespace: namespace.clone(),
            quorum_queues: false,
        };
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), store_config.clone(), broker);
        config.auth.jwt_signing_key = Some(SIGNING_KEY.into());
        config.auth.admin_client_id = Some(ADMIN_ID.into());
        config.auth.admin_secret = Some(ADMIN_SECRET.into());
        tweak(&mut config);

        let shutdown = CancellationToken::new();
        let app = App::build(config, shutdown.clone())
            .await
            .expect("gateway starts");
        let base = format!("http://{}", app.local_addr());
        let server = tokio::spawn(app.run());

        let store = store_config
            .open_for_scheduler()
            .await
            .expect("test store handle");
        let names = Names::new(namespace);
        let connection = Connection::connect(&broker_url(), ConnectionProperties::default())
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        // What the gateway's connection also declares; declared here too so that a test does
        // not race the gateway's first connect.
        topology::declare_topology(&channel, &names)
            .await
            .expect("topology");

        TestApp {
            base,
            http: reqwest::Client::new(),
            store,
            names,
            channel,
            connection,
            shutdown,
            server,
            classes: Mutex::new(vec![]),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and checks its answer against the OpenAPI document.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let request = request.build().expect("a valid request");
        let (method, path) = (
            request.method().as_str().to_lowercase(),
            request.url().path().to_owned(),
        );
        let r = self.http.execute(request).await.expect("HTTP request");
        let status = r.status().as_u16();
        let op = assert_documented(&method, &path, status);
        // The body is read to check it, then handed on as it came (status, headers and bytes).
        let mut answer = axum::http::Response::builder().status(r.status());
        for (name, value) in r.headers() {
            answer = answer.header(name, value);
        }
        let body = r.bytes().await.expect("the answer's body");
        if let Some(op) = op {
            assert_body_matches(op, status, answer.headers_ref().expect("headers"), &body);
        }
        reqwest::Response::from(answer.body(body).expect("an answer"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.send(self.http.get(self.url(path)).bearer_auth(token)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn post_json_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.send(self.http.post(self.url(path)).bearer_auth(token).json(body))
            .await
    }

    pub async fn put_json_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.send(self.http.put(self.url(path)).bearer_auth(token).json(body))
            .await
    }

    pub async fn delete_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut r = self.http.delete(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    // ----- access control

    /// Logs in with client credentials; returns `(access_token, refresh_token)`.
    pub async fn login(&self, client_id: &str, secret: &str) -> (String, String) {
        let r = self
            .send(
                self.http
                    .post(self.url("/v1/oauth2/token"))
                    .basic_auth(client_id, Some(secret)),
            )
            .await;
        assert_eq!(r.status(), 200, "login of {client_id}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A client as the store keeps it.
    pub async fn store_client(&self, client_id: &str) -> flinger_store::ClientRecord {
        use flinger_store::Records;
        self.store
            .get_client(client_id)
            .await
            .unwrap()
            .expect("client stored")
    }

    pub async fn store_clients(&self) -> Vec<flinger_store::ClientRecord> {
        use flinger_store::Records;
        self.store.list_clients().await.unwrap()
    }

    /// The bootstrap admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_ID, ADMIN_SECRET).await.0
    }

    /// Creates a client through the API (as the admin) and returns its access token.
    /// `extra` adds permission fields (`max_priority`, `max_reservation_time`, `email`).
    pub async fn client(&self, client_id: &str, role: &str, extra: Value) -> String {
        let admin = self.admin_token().await;
        let secret = format!("{client_id}-secret-0123456789");
        let mut body = json!({"client_secret": secret, "role": role});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        let r = self
            .put_json_as(&admin, &format!("/v1/client-permissions/{client_id}"), &body)
            .await;
        assert_eq!(
            r.status(),
            200,
            "creating client {client_id}: {:?}",
            r.text().await
        );
        self.login(client_id, &secret).await.0
    }

    /// Declares a device class, as an agent serving it would.
    pub async fn declare_class(&self, class: &str) {
        let class = DeviceClass::parse(class).unwrap();
        topology::declare_class(&self.channel, &self.names, &class)
            .await
            .expect("declare class");
        self.classes.lock().unwrap().push(class);
    }

    /// Takes the next message from a class queue, waiting a little for it to arrive.
    pub async fn next_submission(&self, class: &str) -> Option<(Submission, BasicProperties, u32)> {
        let queue = self.names.class_queue(&DeviceClass::parse(class).unwrap());
        for _ in 0..20 {
            let got = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(m) = got {
                let submission = broker_schema::decode_submission(&m.delivery.data).expect("a submission");
                return Some((submission, m.delivery.properties.clone(), m.message_count));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Stores a job directly, as the scheduler would have left it after `shape`.
    pub async fn insert_job(&self, job: Value, shape: impl FnOnce(&mut JobRecord)) -> JobRecord {
        let definition = JobDefinition::parse(job).expect("valid job");
        let mut record = JobRecord::new_waiting(Uuid::new_v4(), definition, None, Millis::now());
        shape(&mut record);
        self.store.insert_job(&record).await.expect("insert job");
        record
    }

    /// Stores output fragments, as the scheduler projects them.
    pub async fn write_output(
        &self,
        job: &JobRecord,
        attempt: u32,
        stream: LogStream,
        frags: &[(u64, Phase, Millis, &[u8])],
    ) {
        let fragments: Vec<OutputFragment> = frags
            .iter()
            .map(|(seq, phase, at, data)| OutputFragment {
                job_id: job.job_id,
                attempt,
                stream,
                seq: *seq,
                phase: *phase,
                at: *at,
                data: data.to_vec(),
            })
            .collect();
        self.store.append_output(&fragments).await.expect("append output");
    }

    /// Records an agent's heartbeat sent at `at`.
    pub async fn heartbeat(&self, name: &str, queues: &[&str], state: AgentState, at: Millis) {
        let hb = Heartbeat {
            agent: AgentName::parse(name).unwrap(),
            state,
            job_id: None,
            queues: queues.iter().map(|q| DeviceClass::parse(*q).unwrap()).collect(),
            location: Some("lab-1".into()),
            provision_type: Some("fake".into()),
            comment: None,
            interval_ms: 1_000,
            at,
            version: "test".into(),
        };
        self.store.record_heartbeat(&hb).await.expect("record heartbeat");
    }

    /// Answers requests on the scheduler's RPC queue with `answer`, as the scheduler would, and
    /// reports each request it served. Stops with the test's connection.
    pub async fn fake_scheduler(
        &self,
        answer: impl Fn(&SchedulerRequest) -> SchedulerReply + Send + 'static,
    ) -> tokio::sync::mpsc::UnboundedReceiver<SchedulerRequest> {
        let ch = self.connection.create_channel().await.expect("channel");
        let mut consumer = ch
            .basic_consume(
                self.names.scheduler_rpc_queue().as_str().into(),
                "fake-scheduler".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume the RPC queue");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let request: SchedulerRequest = broker_schema::decode(&d.data).expect("a scheduler request");
                let reply = broker_schema::encode(&answer(&request));
                let _ = tx.send(request);
                let props = BasicProperties::default()
                    .with_content_type(broker_schema::CONTENT_TYPE.into())
                    .with_correlation_id(d.properties.correlation_id().clone().expect("correlation id"));
                let to = d.properties.reply_to().clone().expect("reply_to");
                ch.basic_publish("".into(), to, BasicPublishOptions::default(), &reply, props)
                    .await
                    .expect("reply");
            }
        });
        rx
    }

    /// Waits until the gateway reports ready (its broker link comes up in the background).
    pub async fn wait_ready(&self) -> reqwest::Response {
        for _ in 0..100 {
            let r = self.get("/readyz").await;
            if r.status() == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.get("/readyz").await
    }

    /// Stops the gateway and deletes the namespace's queues and exchanges.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        // The gateway's own connection is closed by now; tidy the namespace with ours.
        let n = &self.names;
        let mut queues = vec![
            n.dead_queue(),
            n.scheduler_submissions_queue(),
            n.scheduler_status_queue(),
            n.scheduler_output_queue(),
            n.scheduler_rpc_queue(),
            n.gateway_events_queue(),
        ];
        queues.extend(self.classes.lock().unwrap().iter().map(|c| n.class_queue(c)));
        for q in queues {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            n.jobs_exchange(),
            n.events_exchange(),
            n.control_exchange(),
            n.dead_exchange(),
        ] {
            let _ = self
                .channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.channel.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// A JSON body's `detail.json` (Testflinger's validation shape), asserting the envelope.
pub async fn validation_detail(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("JSON body");
    assert_eq!(body["message"], "Validation error", "{body}");
    body["detail"]["json"].clone()
}

/// Fails unless the OpenAPI document lists `status` for `method` on the template matching `path`;
/// the operation, unless the router itself answered (no route).
pub fn assert_documented(method: &str, path: &str, status: u16) -> Option<openapi::Op> {
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let ops = openapi::operations();
    let matches = |template: &str| {
        let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        // `{path}` of the secrets endpoint takes the rest of the path (it may contain slashes).
        if let Some(i) = t.iter().position(|s| *s == "{path}") {
            return p.len() > i
                && t[..i]
                    .iter()
                    .zip(&p[..i])
                    .all(|(a, b)| a.starts_with('{') || a == b);
        }
        t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
    };
    // A literal segment wins over a parameter (`/v1/job/search` over `/v1/job/{job_id}`).
    let literal = |template: &str| template.split('/').filter(|s| !s.starts_with('{')).count();
    let op = ops
        .iter()
        .filter(|o| o.method == method && matches(o.path))
        .max_by_key(|o| literal(o.path));
    let Some(op) = op else {
        // A request no route serves is the router's own 404/405, which the document need not list.
        if status == 404 || status == 405 {
            return None;
        }
        panic!("{method} {path} answered {status} but is not in the OpenAPI document");
    };
    assert!(
        op.responses.contains(&status),
        "{method} {path} ({}) answered {status}, which the OpenAPI document does not list",
        op.path
    );
    Some(op.clone())
}

/// Fails unless a JSON answer matches the schema the document gives for `op`'s `status`.
pub fn assert_body_matches(op: openapi::Op, status: u16, headers: &axum::http::HeaderMap, body: &[u8]) {
    let json_answer = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let doc = serde_json::to_value(openapi::document()).expect("the document serializes");
    let response = &doc["paths"][op.path][op.method]["responses"][status.to_string()];
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        assert!(
            !json_answer,
            "{} {} answered {status} with JSON, which the document does not describe",
            op.method, op.path
        );
        return;
    };
    assert!(
        json_answer,
        "{} {} answered {status} without the JSON body the document describes",
        op.method, op.path
    );
    let instance: Value = serde_json::from_slice(body).expect("a JSON body");
    // One schema document: the response's schema, with the components as its `$defs`.
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": doc["components"]["schemas"],
    });
    if let (Some(r), Some(s)) = (root.as_object_mut(), schema.as_object()) {
        r.extend(s.clone());
    }
    let text = root.to_string().replace("#/components/schemas/", "#/$defs/");
    let url = "http://flinger.test/answer.json";
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource(url, serde_json::from_str(&text).expect("JSON"))
        .expect("a resource");
    let index = compiler.compile(url, &mut schemas).unwrap_or_else(|e| {
        panic!(
            "{} {}: the schema of {status} does not compile: {e:#}",
            op.method, op.path
        )
    });
    if let Err(e) = schemas.validate(&instance, index) {
        panic!(
            "{} {} answered {status} with a body that does not match the document: {e}\n{instance}",
            op.method, op.path
        );
    }
}
