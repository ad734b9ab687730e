//! Plain AMQP, as another system would use it: no Flinger code in the way.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

pub async fn connect() -> Connection {
    Connection::connect(&crate::broker_url(), ConnectionProperties::default())
        .await
        .expect("broker")
}

/// Publishes bytes with confirms; returns whether the broker returned the message as unroutable.
pub async fn publish(
    conn: &Connection,
    exchange: &str,
    key: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> bool {
    let mut props = BasicProperties::default();
    if let Some(ct) = content_type {
        props = props.with_content_type(ct.into());
    }
    publish_with(conn, exchange, key, body, props)
        .await
        .expect("publish")
}

/// Publishes bytes, persistent and `mandatory`, with these properties and confirms; returns
/// whether the broker returned the message as unroutable, or the error that closed the channel
/// (e.g. RabbitMQ refusing a `user_id` that is not the connection's user).
pub async fn publish_with(
    conn: &Connection,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<bool, lapin::Error> {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let props = props.with_delivery_mode(2);
    let confirm = async {
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await?
        .await
    }
    .await?;
    let _ = ch.close(200, "done".into()).await;
    assert!(confirm.is_ack(), "broker nacked the publish");
    Ok(confirm.take_message().is_some())
}

/// A queue of our own bound to `exchange` with `key`, to watch what is published there
/// (exclusive: it goes away with the connection).
pub async fn tap(conn: &Connection, exchange: &str, key: &str) -> String {
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare tap");
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        key.into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind tap");
    q.name().to_string()
}

/// A RabbitMQ user made for one test (with `rabbitmqctl`), deleted when dropped, even when the
/// test fails. The tests run as root next to the broker, as `scripts/test` arranges.
pub struct TempUser {
    pub name: String,
    pub password: String,
}

impl TempUser {
    /// A user that may write to the exchanges matching `write` (a regex) and nothing else.
    pub fn create(prefix: &str, write: &str) -> TempUser {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let user = TempUser {
            name,
            password: "temp-user-password".into(),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, "^$", write, "^$"]);
        user
    }

    /// The broker URL to connect as this user.
    pub fn url(&self) -> String {
        format!("amqp://{}:{}@127.0.0.1:5672/%2f", self.name, self.password)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// Runs `rabbitmqctl`, failing the test with its output when it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed next to the broker (scripts/test installs it)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A regex matching exactly `s`.
pub fn regex_exact(s: &str) -> String {
    let mut out = String::from("^");
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('$');
    out
}

/// A message taken off a queue, with its string headers.
#[derive(Debug)]
pub struct Got {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Got {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Takes every message currently in `queue`.
pub async fn drain(conn: &Connection, queue: &str) -> Vec<Got> {
    let ch = conn.create_channel().await.expect("channel");
    let mut out = vec![];
    while let Ok(Some(m)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
        let headers = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .map(|h: &FieldTable| {
                h.inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        AMQPValue::LongString(s) => {
                            Some((k.to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned()))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = m.delivery.acker.ack(BasicAckOptions::default()).await;
        out.push(Got {
            body: m.delivery.data.clone(),
            headers,
        });
    }
    let _ = ch.close(200, "done".into()).await;
    out
}

/// Deletes queues and exchanges (best effort).
pub async fn delete(conn: &Connection, queues: &[String], exchanges: &[String]) {
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.exchange_delete(x.as_str().into(), Default::default()).await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
}
