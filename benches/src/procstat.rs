//! A process's CPU time and resident memory, read from `/proc` (Linux).

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / ticks_per_sec()))
}

/// Resident memory in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|k| k / 1024.0)
}

/// Peak resident memory in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM:").map(|k| k / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU use of a process over a window, as a share of one core (1.0 = one core busy).
pub struct CpuMeter {
    pid: u32,
    start_cpu: Duration,
    start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            start_cpu: cpu_time(pid).unwrap_or_default(),
            start: std::time::Instant::now(),
        }
    }

    /// Cores used on average since `start`.
    pub fn cores(&self) -> f64 {
        let used = cpu_time(self.pid)
            .unwrap_or_default()
            .saturating_sub(self.start_cpu);
        used.as_secs_f64() / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}
