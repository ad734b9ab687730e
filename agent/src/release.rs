//! The device's release (`22.04.5`, `Core 22`…), the `release` label of Testflinger's
//! `phase_duration_seconds`: after a successful provision, Testflinger's agent logs into the
//! device (`ssh <test_username>@<device_ip> cat /etc/os-release`) and derives a label from the
//! answer. Ours does the same, beside the job rather than in its way: the query starts when
//! provision ends and its answer is awaited only when the next phase's duration is recorded.
//!
//! Only for metrics: asked only when the agent serves metrics and its connector runs
//! Testflinger device connectors. It never changes the job.

use std::time::Duration;
use tokio::task::JoinHandle;

/// What Testflinger's agent reports when the device did not tell.
pub const UNKNOWN: &str = "unknown";

/// Longest the query may take, as Testflinger's agent allows it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The release label of the run's device.
#[derive(Default)]
pub enum Release {
    /// Not provisioned (yet): Testflinger's empty label.
    #[default]
    None,
    Asking(JoinHandle<String>),
    Known(String),
}

impl Release {
    /// Starts asking the device at `ip`, as `user`.
    pub fn ask(ip: String, user: String) -> Release {
        Release::Asking(tokio::spawn(query(ip, user)))
    }

    /// The label, waiting for the query if it is still running.
    pub async fn label(&mut self) -> &str {
        if let Release::Asking(handle) = self {
            let label = handle.await.unwrap_or_else(|_| UNKNOWN.to_owned());
            *self = Release::Known(label);
        }
        match self {
            Release::Known(label) => label,
            _ => "",
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Release::Asking(handle) = self {
            handle.abort();
        }
    }
}

async fn query(ip: String, user: String) -> String {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ])
    .arg(format!("{user}@{ip}"))
    .arg("cat /etc/os-release")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    match tokio::time::timeout(QUERY_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => label(&String::from_utf8_lossy(&out.stdout)),
        Ok(Ok(out)) => {
            tracing::debug!(%ip, code = ?out.status.code(), "the device did not say its release");
            UNKNOWN.to_owned()
        }
        Ok(Err(e)) => {
            tracing::debug!(%ip, error = %e, "cannot run ssh to ask the device's release");
            UNKNOWN.to_owned()
        }
        Err(_) => UNKNOWN.to_owned(),
    }
}

/// The label of an `/etc/os-release`: `Core <VERSION_ID>` for Ubuntu Core, else the point
/// release found in `VERSION` (or `PRETTY_NAME`), else `VERSION_ID`; `unknown` without one.
pub fn label(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            (k == key).then(|| v.trim_matches('"').to_owned())
        })
    };
    let Some(version_id) = field("VERSION_ID").filter(|v| !v.is_empty()) else {
        return UNKNOWN.to_owned();
    };
    if field("NAME").is_some_and(|n| n.contains("Ubuntu Core")) {
        return format!("Core {version_id}");
    }
    let version = field("VERSION")
        .or_else(|| field("PRETTY_NAME"))
        .unwrap_or_default();
    // `VERSION_ID` followed by `.<digits>`: the point release.
    let mut from = 0;
    while let Some(i) = version[from..].find(&version_id) {
        let start = from + i;
        let rest = &version[start + version_id.len()..];
        if let Some(digits) = rest.strip_prefix('.') {
            let n = digits.chars().take_while(char::is_ascii_digit).count();
            if n > 0 {
                return version[start..start + version_id.len() + 1 + n].to_owned();
            }
        }
        from = start + version_id.len();
    }
    version_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_testflinger_derives_them() {
        let jammy = "PRETTY_NAME=\"Ubuntu 22.04.5 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.5 LTS (Jammy Jellyfish)\"\n";
        assert_eq!(label(jammy), "22.04.5");
        let noble = "PRETTY_NAME=\"Ubuntu 24.04 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION=\"24.04 LTS (Noble Numbat)\"\n";
        assert_eq!(label(noble), "24.04");
        let core = "NAME=\"Ubuntu Core\"\nVERSION_ID=\"22\"\nPRETTY_NAME=\"Ubuntu Core 22\"\n";
        assert_eq!(label(core), "Core 22");
        assert_eq!(label("NAME=x\n"), UNKNOWN);
    }
}
