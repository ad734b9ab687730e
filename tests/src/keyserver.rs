//! A stand-in for Launchpad's and GitHub's key lists: `GET /<anything>/<user>` answers the
//! keys registered for `user`, so reservations can import `lp:`/`gh:` ids without the internet.

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct KeyServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    pub async fn start(keys: BTreeMap<String, String>) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let keys = Arc::new(keys);
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let keys = keys.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("/");
                    let user = path.rsplit('/').next().unwrap_or("");
                    let (status, body) = match keys.get(user) {
                        Some(k) => ("200 OK", k.clone()),
                        None => ("404 Not Found", String::new()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        KeyServer { base, task }
    }

    /// The agent config lines pointing `lp:` and `gh:` at this server.
    pub fn agent_yaml(&self) -> String {
        format!(
            "key_servers:\n  lp: {0}/lp/{{user}}\n  gh: {0}/gh/{{user}}\n",
            self.base
        )
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
