//! A child process of the lab, with its output in a log file, killed when dropped.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> Proc {
        let mut p = Proc {
            name: name.to_owned(),
            log: log_dir.join(format!("{name}.log")),
            program: program.to_owned(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            child: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            // The lab's log level, unless the test gave this process one of its own.
            .env(
                "FLINGER_LOG",
                std::env::var("FLINGER_TEST_LOG").unwrap_or_else(|_| "info,flinger=debug".into()),
            )
            .envs(self.envs.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a signal (SIGKILL for a crash, SIGTERM for a graceful stop).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Kills the process without warning and reaps it: a crash.
    pub fn crash(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns its exit status code.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        self.signal_child(&child, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own and reaps it: its exit code
    /// (`None` if killed by a signal). Panics if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("the process was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_child(&self, child: &Child, sig: Signal) {
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
    }

    /// Starts the same program again (after a crash or stop), appending to the same log.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.crash();
        }
        self.start();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
