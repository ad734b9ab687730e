//! A whole lab in one value: store, scheduler(s), gateway, agents.

use crate::proc::Proc;
use crate::{bin, broker, eventually, init_tls, unique_namespace};
use broker_schema::Names;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    /// MongoDB (the stand-in in tests): `FLINGER_TEST_MONGO_URI`, else one started on 27017.
    Mongo,
    /// This exact store URL (e.g. a [`crate::private_mongo::PrivateMongo`]).
    Url(String),
}

/// An agent to start: its name, queues and the YAML of its connector (or phase commands).
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: String,
    pub queues: Vec<String>,
    /// Extra YAML lines for the agent's config file (connector, commands, caps…).
    pub yaml: String,
}

impl AgentSpec {
    /// A simulated device; `fake_yaml` goes under `connector:` (after `type: fake`).
    pub fn fake(name: &str, queues: &[&str]) -> AgentSpec {
        AgentSpec::fake_with(name, queues, "")
    }

    pub fn fake_with(name: &str, queues: &[&str], fake_yaml: &str) -> AgentSpec {
        let mut yaml = String::from("connector:\n  type: fake\n");
        for line in fake_yaml.lines() {
            yaml.push_str("  ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        AgentSpec {
            name: name.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            yaml,
        }
    }

    /// A Testflinger-style agent: `<phase>_command` keys (e.g. `("test", "flinger-agent run-test-cmds")`).
    pub fn commands(name: &str, queues: &[&str], commands: &[(&str, &str)]) -> AgentSpec {
        let mut yaml = String::new();
        for (phase, cmd) in commands {
            yaml.push_str(&format!(
                "{phase}_command: {}\n",
                serde_json::to_string(cmd).expect("string")
            ));
        }
        AgentSpec {
            name: name.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            yaml,
        }
    }

    pub fn with_yaml(mut self, extra: &str) -> AgentSpec {
        self.yaml.push_str(extra);
        if !extra.ends_with('\n') {
            self.yaml.push('\n');
        }
        self
    }
}

pub struct LabBuilder {
    store: StoreKind,
    schedulers: usize,
    scheduler_args: Vec<String>,
    agents: Vec<AgentSpec>,
    gateway: bool,
    /// Gateways besides the first (competing, stateless: any may answer any request).
    more_gateways: usize,
    prefix: String,
    broker_url: Option<String>,
    gateway_env: Vec<(String, String)>,
    agent_heartbeat_secs: f64,
    quorum_queues: bool,
    /// Whether the schedulers hand agents a files credential (as `scripts/lab` sets them up).
    files_credential: bool,
    /// This exact namespace instead of a new one (a lab restarted on a restored store).
    namespace: Option<String>,
}

impl LabBuilder {
    /// Every process declares the queues that need no priority as quorum queues (a cluster).
    pub fn quorum_queues(mut self) -> Self {
        self.quorum_queues = true;
        self
    }

    /// Schedulers without `--gateway-url`: lease grants carry no files credential, so only
    /// agents with a `server_address` of their own can fetch attachments and upload artifacts.
    pub fn without_files_credential(mut self) -> Self {
        self.files_credential = false;
        self
    }

    /// Sets the agents' `heartbeat_interval` (default 0.5 s, so that tests see state changes
    /// quickly; benchmarks use the production 10 s).
    pub fn agent_heartbeat(mut self, secs: f64) -> Self {
        self.agent_heartbeat_secs = secs;
        self
    }

    /// Uses another broker than the machine's (a [`crate::private_broker::PrivateBroker`]), or
    /// a cluster's nodes (comma-separated URLs).
    pub fn broker(mut self, url: &str) -> Self {
        self.broker_url = Some(url.into());
        self
    }

    /// Sets an environment variable for the gateway only (e.g. a broker it cannot reach).
    pub fn gateway_env(mut self, key: &str, value: &str) -> Self {
        self.gateway_env.push((key.into(), value.into()));
        self
    }

    pub fn store(mut self, kind: StoreKind) -> Self {
        self.store = kind;
        self
    }

    pub fn schedulers(mut self, n: usize) -> Self {
        self.schedulers = n;
        self
    }

    /// Replaces a scheduler flag (e.g. `("--lease-secs", "2")`).
    pub fn scheduler_arg(mut self, flag: &str, value: &str) -> Self {
        if let Some(i) = self.scheduler_args.iter().position(|a| a == flag) {
            self.scheduler_args[i + 1] = value.into();
        } else {
            self.scheduler_args.extend([flag.to_owned(), value.to_owned()]);
        }
        self
    }

    pub fn agent(mut self, spec: AgentSpec) -> Self {
        self.agents.push(spec);
        self
    }

    pub fn without_gateway(mut self) -> Self {
        self.gateway = false;
        self
    }

    /// Starts `n` gateways (at least one): the first is [`Lab::base`], the others
    /// [`Lab::more_bases`].
    pub fn gateways(mut self, n: usize) -> Self {
        assert!(n >= 1, "a lab with gateways has at least one");
        self.gateway = true;
        self.more_gateways = n - 1;
        self
    }

    pub fn name(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses an earlier lab's namespace (its queues, and the messages still in them).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub async fn start(self) -> Lab {
        init_tls();
        let dir = tempfile::Builder::new()
            .prefix("flinger-lab-")
            .tempdir()
            .expect("temp dir");
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| unique_namespace(&self.prefix));
        let store = match self.store {
            StoreKind::Sqlite => format!("sqlite:{}", dir.path().join("flinger.db").display()),
            StoreKind::Mongo => format!("{}/{}", mongo_uri(), namespace.replace('-', "_")),
            StoreKind::Url(url) => url,
        };
        let mut lab = Lab {
            namespace: namespace.clone(),
            names: Names::new(&namespace),
            store,
            schedulers: vec![],
            gateway: None,
            more_gateways: vec![],
            agents: vec![],
            base: String::new(),
            more_bases: vec![],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            classes: vec![],
            broker_url: self.broker_url.unwrap_or_else(crate::broker_url),
            dir,
            agent_heartbeat_secs: self.agent_heartbeat_secs,
            quorum_queues: self.quorum_queues,
            gateway_listen: String::new(),
            files_env: vec![],
            admin: {
                let env = |k: &str| {
                    self.gateway_env
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                env("FLINGER_ADMIN_CLIENT_ID").zip(env("FLINGER_ADMIN_SECRET"))
            },
        };
        // As scripts/lab: the gateway's address and token key are known to the schedulers, whose
        // lease grants then carry a files credential (agents need no client of their own).
        if self.gateway {
            lab.gateway_listen = format!("127.0.0.1:{}", crate::free_port());
            let key = self
                .gateway_env
                .iter()
                .find(|(k, _)| k == "FLINGER_JWT_SIGNING_KEY")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("{namespace}-token-key"));
            let mut env = vec![("FLINGER_JWT_SIGNING_KEY".to_owned(), key)];
            if self.files_credential {
                env.push((
                    "FLINGER_GATEWAY_URL".to_owned(),
                    format!("http://{}", lab.gateway_listen),
                ));
            }
            lab.files_env = env;
        }
        for i in 0..self.schedulers {
            lab.start_scheduler(&format!("scheduler-{i}"), &self.scheduler_args);
        }
        if self.gateway {
            let listen = lab.gateway_listen.clone();
            let (p, base) = lab.start_gateway("gateway", &listen, &self.gateway_env).await;
            lab.gateway = Some(p);
            lab.base = base;
            for i in 1..=self.more_gateways {
                let (p, base) = lab
                    .start_gateway(&format!("gateway-{i}"), "127.0.0.1:0", &self.gateway_env)
                    .await;
                lab.more_gateways.push(p);
                lab.more_bases.push(base);
            }
        }
        for spec in self.agents {
            lab.add_agent(spec).await;
        }
        lab
    }
}

fn mongo_uri() -> String {
    if let Ok(uri) = std::env::var("FLINGER_TEST_MONGO_URI") {
        return uri.trim_end_matches('/').to_owned();
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mongo-standin/standin");
        let status = std::process::Command::new(script)
            .args(["start", "--port", "27017"])
            .status()
            .expect("mongo stand-in");
        assert!(status.success(), "cannot start the MongoDB stand-in");
    });
    "mongodb://127.0.0.1:27017".into()
}

pub struct Lab {
    pub namespace: String,
    pub names: Names,
    /// The `--store` value every component uses.
    pub store: String,
    pub schedulers: Vec<Proc>,
    pub gateway: Option<Proc>,
    /// The gateways after the first ([`LabBuilder::gateways`]), in the order of `more_bases`.
    pub more_gateways: Vec<Proc>,
    pub agents: Vec<Proc>,
    /// `http://127.0.0.1:PORT` of the first gateway.
    pub base: String,
    /// The other gateways' base URLs.
    pub more_bases: Vec<String>,
    pub http: reqwest::Client,
    classes: Vec<String>,
    pub broker_url: String,
    pub dir: tempfile::TempDir,
    agent_heartbeat_secs: f64,
    quorum_queues: bool,
    /// The gateway's `FLINGER_LISTEN`, chosen before the schedulers start (they tell agents).
    gateway_listen: String,
    /// The token key (for the gateway and the schedulers) and, unless disabled, the gateway's
    /// URL (for the schedulers).
    files_env: Vec<(String, String)>,
    /// The bootstrap admin's id and secret when the gateway has one: the lab's own reads (an
    /// agent's state) log in with it, so they work where anonymous use is off.
    admin: Option<(String, String)>,
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder {
            store: StoreKind::Sqlite,
            schedulers: 1,
            // Short leases and quick reaping, so that fault tests finish in seconds.
            scheduler_args: [
                ("--lease-secs", "4"),
                ("--renew-secs", "1"),
                ("--reap-secs", "0.5"),
                ("--republish-secs", "3"),
                ("--backstop-grace-secs", "5"),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.to_owned(), v.to_owned()])
            .collect(),
            agents: vec![],
            gateway: true,
            more_gateways: 0,
            prefix: "lab".into(),
            broker_url: None,
            gateway_env: vec![],
            agent_heartbeat_secs: 0.5,
            quorum_queues: false,
            files_credential: true,
            namespace: None,
        }
    }

    fn common_env(&self) -> Vec<(String, String)> {
        vec![
            ("FLINGER_BROKER_URL".into(), self.broker_url.clone()),
            ("FLINGER_NAMESPACE".into(), self.namespace.clone()),
            ("FLINGER_STORE".into(), self.store.clone()),
            ("FLINGER_LOG_FORMAT".into(), "json".into()),
            ("FLINGER_QUORUM_QUEUES".into(), self.quorum_queues.to_string()),
        ]
    }

    pub fn start_scheduler(&mut self, name: &str, args: &[String]) {
        let mut env = self.common_env();
        env.extend(self.files_env.iter().cloned());
        let p = Proc::spawn(name, &bin("flinger-scheduler"), args, &env, self.dir.path());
        self.schedulers.push(p);
    }

    /// Starts a gateway listening on `listen` and waits until it is ready: the process and its
    /// base URL.
    async fn start_gateway(&self, name: &str, listen: &str, extra: &[(String, String)]) -> (Proc, String) {
        let mut env = self.common_env();
        env.push(("FLINGER_LISTEN".into(), listen.to_owned()));
        env.extend(
            self.files_env
                .iter()
                .filter(|(k, _)| k == "FLINGER_JWT_SIGNING_KEY")
                .cloned(),
        );
        env.extend(extra.iter().cloned());
        let p = Proc::spawn(name, &bin("flinger-gateway"), &[], &env, self.dir.path());
        let log = p.log.clone();
        let addr = eventually(Duration::from_secs(20), "the gateway to listen", || {
            let log = log.clone();
            async move { listening_addr(&log) }
        })
        .await;
        let base = format!("http://{addr}");
        // A gateway deliberately cut off from the broker is alive but never ready.
        let probe = if extra.iter().any(|(k, _)| k == "FLINGER_BROKER_URL") {
            "healthz"
        } else {
            "readyz"
        };
        let (http, url) = (self.http.clone(), format!("{base}/{probe}"));
        eventually(Duration::from_secs(20), "the gateway to be ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
        (p, base)
    }

    /// Writes the agent's config file and starts it; waits until the lab shows it waiting.
    pub async fn add_agent(&mut self, spec: AgentSpec) {
        self.add_agent_with_args(spec, |config| {
            vec!["--config".to_owned(), config.display().to_string()]
        })
        .await;
    }

    /// The config file [`Lab::add_agent`] writes for agent `name`.
    pub fn agent_config(&self, name: &str) -> PathBuf {
        self.dir.path().join("agents").join(name).join("agent.yaml")
    }

    /// As [`Lab::add_agent`], with the command line `args` makes from the config file's path
    /// (e.g. `testflinger-agent`'s `-c FILE -p PORT`).
    pub async fn add_agent_with_args(&mut self, spec: AgentSpec, args: impl FnOnce(&Path) -> Vec<String>) {
        let home = self.dir.path().join("agents").join(&spec.name);
        std::fs::create_dir_all(&home).expect("agent home");
        let config = format!(
            "agent_id: {}\njob_queues: {}\nexecution_basedir: {}\nstate_dir: {}\nheartbeat_interval: {}\ncleanup_timeout: 30\n{}",
            spec.name,
            serde_json::to_string(&spec.queues).expect("queues"),
            home.join("run").display(),
            home.join("state").display(),
            self.agent_heartbeat_secs,
            spec.yaml
        );
        let path = self.agent_config(&spec.name);
        std::fs::write(&path, config).expect("agent config");
        let mut env = self.common_env();
        // `flinger-agent run-test-cmds` in test commands must find the binary under test.
        let path_var = format!(
            "{}:{}",
            crate::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        env.push(("PATH".into(), path_var));
        let args = args(&path);
        let p = Proc::spawn(&spec.name, &bin("flinger-agent"), &args, &env, self.dir.path());
        self.agents.push(p);
        for q in &spec.queues {
            if !self.classes.contains(q) {
                self.classes.push(q.clone());
            }
        }
        if self.gateway.is_some() {
            self.wait_agent_state(&spec.name, "waiting").await;
        }
    }

    pub fn agent(&mut self, name: &str) -> &mut Proc {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    pub async fn wait_agent_state(&self, name: &str, state: &str) -> Value {
        let url = format!("{}/v1/agents/data/{name}", self.base);
        let what = format!("agent {name} to be {state}");
        let token = match &self.admin {
            Some((id, secret)) => Some(self.access_token(id, secret).await),
            None => None,
        };
        eventually(Duration::from_secs(30), &what, || {
            let (http, url, token) = (self.http.clone(), url.clone(), token.clone());
            async move {
                let mut request = http.get(&url);
                if let Some(t) = token {
                    request = request.bearer_auth(t);
                }
                let v: Value = request.send().await.ok()?.json().await.ok()?;
                (v["state"] == state).then_some(v)
            }
        })
        .await
    }

    // ----- HTTP API

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` as a browser asks for a page (`Accept: text/html`); returns the status code
    /// and the body.
    pub async fn get_page(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .header("accept", "text/html")
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// POSTs a job; returns the status code and the JSON body.
    pub async fn post_job(&self, job: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/job"))
            .json(job)
            .send()
            .await
            .expect("POST /v1/job");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job that must be accepted.
    pub async fn submit(&self, job: &Value) -> Uuid {
        let (status, body) = self.post_job(job).await;
        assert_eq!(status, 200, "submission refused: {body}");
        body["job_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("job_id")
    }

    /// Our extension: the whole job record. `None` while unknown.
    pub async fn info(&self, id: Uuid) -> Option<Value> {
        self.info_at(&self.base, id).await
    }

    /// [`Lab::info`] asked of the gateway at `base` (one of [`Lab::more_bases`]).
    pub async fn info_at(&self, base: &str, id: Uuid) -> Option<Value> {
        let r = self
            .http
            .get(format!("{base}/v1/job/{id}/info"))
            .send()
            .await
            .ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        r.json().await.ok()
    }

    /// Waits until the job's (true) state is one of `states`. On timeout, panics with the job's
    /// record and the tail of every process's log, so a failure can be understood from CI output.
    pub async fn wait_state(&self, id: Uuid, states: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.info(id).await;
            if let Some(v) = &info
                && states.contains(&v["state"].as_str().unwrap_or(""))
            {
                return v.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "job {id} not {states:?} after {timeout:?}: {}\n{}",
                    info.map(|v| v.to_string())
                        .unwrap_or_else(|| "unknown to the API".into()),
                    self.log_tails(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of every process's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self
            .schedulers
            .iter()
            .chain(self.gateway.iter())
            .chain(self.more_gateways.iter())
            .chain(self.agents.iter())
        {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("===== {} (last {} lines) =====\n", p.name, tail.len()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until the job ended (complete, cancelled or failed).
    pub async fn wait_done(&self, id: Uuid, timeout: Duration) -> Value {
        self.wait_state(id, &["complete", "cancelled", "failed"], timeout)
            .await
    }

    pub async fn results(&self, id: Uuid) -> Value {
        self.http
            .get(self.url(&format!("/v1/result/{id}")))
            .send()
            .await
            .expect("results")
            .json()
            .await
            .expect("json")
    }

    /// The output of the job's current attempt, every phase in order.
    pub async fn output(&self, id: Uuid) -> String {
        let v: Value = self
            .http
            .get(self.url(&format!("/v1/result/{id}/log/output")))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("json");
        let phases = [
            "setup",
            "provision",
            "firmware_update",
            "test",
            "allocate",
            "reserve",
            "cleanup",
        ];
        phases
            .iter()
            .filter_map(|p| v["output"][p]["log_data"].as_str())
            .collect::<Vec<_>>()
            .join("")
    }

    pub async fn cancel(&self, id: Uuid) -> u16 {
        self.http
            .post(self.url(&format!("/v1/job/{id}/action")))
            .json(&json!({"action": "cancel"}))
            .send()
            .await
            .expect("cancel")
            .status()
            .as_u16()
    }

    /// `POST /v1/oauth2/token` as client `id`: the whole answer (access and refresh token).
    pub async fn login(&self, id: &str, secret: &str) -> Value {
        let r = self
            .http
            .post(self.url("/v1/oauth2/token"))
            .basic_auth(id, Some(secret))
            .send()
            .await
            .expect("the token endpoint answers");
        assert_eq!(r.status(), 200, "login {id}");
        r.json().await.expect("a token answer")
    }

    /// [`Lab::login`]'s access token.
    pub async fn access_token(&self, id: &str, secret: &str) -> String {
        self.login(id, secret).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The `flinger` CLI, pointed at this lab.
    pub fn cli(&self) -> std::process::Command {
        let mut c = std::process::Command::new(bin("flinger"));
        // The CLI keeps a job history, logins and a config: keep them in the lab, not in $HOME.
        let home = self.dir.path().join("cli-home");
        c.env("FLINGER_SERVER", &self.base)
            .env_remove("TESTFLINGER_SERVER")
            .env_remove("FLINGER_CONFIG")
            .env("NO_COLOR", "1")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"));
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Every log of the lab, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self
            .schedulers
            .iter()
            .chain(self.gateway.iter())
            .chain(self.more_gateways.iter())
            .chain(self.agents.iter())
        {
            out.push_str(&format!("===== {} =====\n{}\n", p.name, p.log_text()));
        }
        out
    }

    /// Stops every process (agents first), leaving the lab's queues and their messages.
    pub fn stop_processes(&mut self) {
        for p in self
            .agents
            .iter_mut()
            .chain(self.gateway.iter_mut())
            .chain(self.more_gateways.iter_mut())
            .chain(self.schedulers.iter_mut())
        {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Stops every process and deletes the lab's queues and exchanges.
    pub async fn stop(mut self) {
        self.stop_processes();
        // The first node of a cluster that answers.
        let mut conn = None;
        for url in self.broker_url.split(',') {
            if let Ok(c) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await {
                conn = Some(c);
                break;
            }
        }
        let Some(conn) = conn else {
            return;
        };
        let n = &self.names;
        let mut queues = vec![
            n.dead_queue(),
            n.scheduler_submissions_queue(),
            n.scheduler_status_queue(),
            n.scheduler_output_queue(),
            n.scheduler_rpc_queue(),
            n.gateway_events_queue(),
        ];
        for c in &self.classes {
            if let Ok(class) = broker_schema::DeviceClass::parse(c.as_str()) {
                queues.push(n.class_queue(&class));
            }
        }
        for a in &self.agents {
            if let Ok(agent) = broker_schema::AgentName::parse(a.name.as_str()) {
                queues.push(n.agent_control_queue(&agent));
            }
        }
        let exchanges = vec![
            n.jobs_exchange(),
            n.events_exchange(),
            n.control_exchange(),
            n.dead_exchange(),
        ];
        broker::delete(&conn, &queues, &exchanges).await;
        let _ = conn.close(200, "done".into()).await;
        if std::env::var("FLINGER_KEEP_LABS").is_ok() {
            let kept = self.dir.keep();
            eprintln!("lab kept in {}", kept.display());
        }
    }
}

/// The address in the gateway's "gateway listening" log line (JSON logs).
fn listening_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "gateway listening")
        .and_then(|v| v["addr"].as_str().map(str::to_owned))
}
