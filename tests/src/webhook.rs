//! A `job_status_webhook` receiver: records every body the gateway PUTs to it.

use serde_json::Value;
use std::sync::{Arc, Mutex};

pub struct WebhookReceiver {
    /// The URL to give jobs as their `job_status_webhook`.
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    /// The `Authorization` header of each PUT (None: there was none), in order.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let authorizations: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let (store, auths) = (received.clone(), authorizations.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::put(
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let (store, auths) = (store.clone(), auths.clone());
                    async move {
                        let auth = headers
                            .get(axum::http::header::AUTHORIZATION)
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                        auths.lock().expect("authorizations").push(auth);
                        store.lock().expect("received").push(body);
                        "OK"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url,
            received,
            authorizations,
            task,
        }
    }

    /// The Testflinger event names received so far for `job_id`, in order.
    pub fn event_names(&self, job_id: uuid::Uuid) -> Vec<String> {
        let id = job_id.to_string();
        self.received
            .lock()
            .expect("received")
            .iter()
            .filter(|b| b["job_id"] == id.as_str())
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["event_name"].as_str().map(str::to_owned))
            .collect()
    }
}

impl WebhookReceiver {
    /// The `Authorization` header of every PUT received so far, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.authorizations.lock().expect("authorizations").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
