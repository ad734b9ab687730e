//! How the CLI talks to people and to scripts.
//!
//! - stdout carries the data asked for: a job's output exactly as produced, a job id, a state,
//!   JSON documents (`--json`), or one JSON event per line when following a job with `--json`.
//! - stderr carries everything else: status lines, warnings, errors. Colour is used there only
//!   on a terminal, never when `NO_COLOR` is set or `TERM=dumb`.
//! - While a job is followed on a terminal, a live status line (indicatif) at the bottom of
//!   stderr shows its phase, the time in that phase and since the start, and its queue position
//!   and ETA while it waits. It is never drawn when stderr is not a terminal, with `--json` or
//!   with `--quiet`; other output is printed above it.
//!
//! The CLI runs one task at a time, so writing to the terminal synchronously blocks nothing.

use crate::exit::{CliError, Outcome};
use crate::model::JobId;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::cell::RefCell;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// ANSI styles, or nothing when colour is off.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    pub fn new(enabled: bool) -> Palette {
        Palette { enabled }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn red(self, t: &str) -> String {
        self.paint("1;31", t)
    }
    pub fn green(self, t: &str) -> String {
        self.paint("1;32", t)
    }
    pub fn yellow(self, t: &str) -> String {
        self.paint("1;33", t)
    }
}

/// Colour only on a terminal, and never when the user opted out (<https://no-color.org>).
pub fn color_enabled(is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty) && term != Some(OsStr::new("dumb"))
}

pub struct Ui {
    json: bool,
    /// `--quiet`: no status lines, only the data.
    quiet: bool,
    /// For stderr, where all the colour is.
    palette: Palette,
    /// Whether stderr is a terminal (the live status line is drawn only there).
    stderr_terminal: bool,
    /// The live status line, while a job is followed on a terminal.
    bar: RefCell<Option<ProgressBar>>,
}

impl Ui {
    pub fn new(json: bool) -> Ui {
        let color = color_enabled(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        );
        Ui {
            json,
            quiet: false,
            palette: Palette::new(color),
            stderr_terminal: std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
        }
    }

    /// Whether people are watching: stderr is a terminal, and neither `--json` nor `--quiet`.
    pub fn is_interactive(&self) -> bool {
        self.stderr_terminal && !self.json && !self.quiet
    }

    // ----- the live status line

    /// Shows (or updates) the live status line: `prefix` (the state) with the time since
    /// [`Ui::restart_bar_clock`], the time since the line first showed, then `message`. Both
    /// clocks tick on their own between updates. Does nothing unless [`Ui::is_interactive`].
    pub fn set_bar(&self, prefix: &str, message: &str) {
        if !self.is_interactive() {
            return;
        }
        let mut bar = self.bar.borrow_mut();
        let bar = bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let shown = std::time::Instant::now();
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} {elapsed_precise} (total {total}) {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "total",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_duration(shown.elapsed().as_secs()));
                },
            );
            b.set_style(style);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        bar.set_prefix(prefix.to_owned());
        bar.set_message(message.to_owned());
    }

    /// Restarts the status line's clock (the job entered a new state).
    pub fn restart_bar_clock(&self) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.reset_elapsed();
        }
    }

    /// Removes the live status line.
    pub fn clear_bar(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }

    /// Runs `f` with the status line out of the way (for writing to the terminal).
    fn around_bar<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.bar.borrow().as_ref() {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn quiet(mut self, quiet: bool) -> Ui {
        self.quiet = quiet;
        self
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    // ----- stdout

    /// Text exactly as given, flushed at once (a job's output).
    pub fn raw(&self, text: &str) -> std::io::Result<()> {
        self.around_bar(|| {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        })
    }

    pub fn line(&self, text: &str) -> std::io::Result<()> {
        self.raw(&format!("{text}\n"))
    }

    /// One JSON document, indented.
    pub fn document(&self, v: &impl serde::Serialize) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
        self.line(&text)
    }

    /// One JSON value on one line (an event of a followed job).
    pub fn event(&self, v: &Value) -> std::io::Result<()> {
        self.line(&v.to_string())
    }

    // ----- stderr

    /// A status line; not shown with `--quiet`.
    pub fn status(&self, text: &str) {
        if !self.quiet {
            self.note(&self.palette.dim(text));
        }
    }

    /// A hint for people (how to go on); not shown with `--quiet` or `--json`.
    pub fn hint(&self, text: &str) {
        if !self.quiet && !self.json {
            self.note(&self.palette.dim(text));
        }
    }

    pub fn warn(&self, text: &str) {
        self.note(&format!("{} {text}", self.palette.yellow("warning:")));
    }

    /// One line on stderr, above the status line if there is one.
    pub fn note(&self, line: &str) {
        self.around_bar(|| eprintln!("{line}"));
    }

    pub fn error(&self, e: &CliError) {
        self.clear_bar();
        let mut lines = error_lines(e).into_iter();
        if let Some(first) = lines.next() {
            eprintln!("{} {first}", self.palette.red("error:"));
        }
        for l in lines {
            eprintln!("  {l}");
        }
    }

    /// The last line about a followed job: how it ended.
    pub fn outcome(&self, id: JobId, outcome: &Outcome) {
        if self.quiet {
            return;
        }
        let p = self.palette;
        let text = match outcome {
            Outcome::Passed => p.green(&format!("Job {id} complete.")),
            Outcome::TestFailed { reason } => {
                p.red(&format!("Job {id} complete, but its test failed: {reason}."))
            }
            Outcome::InfrastructureFailed { kind, reason } => {
                p.red(&format!("Job {id} failed ({kind}): {reason}."))
            }
            Outcome::Cancelled => p.yellow(&format!("Job {id} cancelled.")),
        };
        self.clear_bar();
        eprintln!("{text}");
    }
}

/// A table: columns padded to their widest cell, two spaces apart; the last one unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// `3725` → `1h 2m`; `59` → `59s`: a duration for people.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {}h", secs / 86400, (secs % 86400) / 3600),
    }
}

/// An error as lines: the message, then one line per field the server named.
pub fn error_lines(e: &CliError) -> Vec<String> {
    let mut lines = vec![e.to_string()];
    match e {
        CliError::JobRefused { fields, .. } => lines.extend(fields.iter().cloned()),
        CliError::Client(crate::client::ClientError::Refused { detail: Some(d), .. }) => {
            lines.extend(field_error_lines(d));
        }
        _ => {}
    }
    lines
}

/// Flattens Testflinger's `detail` (`{"json": {"test_data": {"test_cmds": ["…"]}}}`) into
/// `test_data.test_cmds: …` lines; list items read `tags[1]`; query parameters are named so.
pub fn field_error_lines(detail: &Value) -> Vec<String> {
    fn walk(path: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                // List items in index order (2 before 10), fields by name.
                keys.sort_by_key(|k| (k.parse::<u64>().unwrap_or(u64::MAX), k.as_str()));
                for k in keys {
                    let child = &m[k.as_str()];
                    let p = match (path.is_empty(), k.chars().all(|c| c.is_ascii_digit())) {
                        (true, _) => k.clone(),
                        (false, true) => format!("{path}[{k}]"),
                        (false, false) => format!("{path}.{k}"),
                    };
                    walk(&p, child, out);
                }
            }
            Value::Array(items) => {
                let msgs: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect();
                out.push(format!("{path}: {}", msgs.join(" ")));
            }
            Value::String(s) => out.push(format!("{path}: {s}")),
            other => out.push(format!("{path}: {other}")),
        }
    }
    let mut out = Vec::new();
    let Some(locations) = detail.as_object() else {
        return vec![detail.to_string()];
    };
    for (location, fields) in locations {
        let mut lines = Vec::new();
        walk("", fields, &mut lines);
        let prefix = if location == "json" {
            ""
        } else {
            "query parameter "
        };
        out.extend(lines.into_iter().map(|l| format!("{prefix}{l}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_enabled(true, None, Some(OsStr::new("xterm"))));
        assert!(!color_enabled(false, None, None));
        assert!(!color_enabled(true, Some(OsStr::new("1")), None));
        assert!(
            color_enabled(true, Some(OsStr::new("")), None),
            "an empty NO_COLOR does not count"
        );
        assert!(!color_enabled(true, None, Some(OsStr::new("dumb"))));
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(
            &["NAME", "STATE", "QUEUES"],
            &[vec!["a".into(), "waiting".into(), "q1 q2".into()]],
        );
        assert_eq!(t, "NAME  STATE    QUEUES\na     waiting  q1 q2");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(3725), "1h 2m");
        assert_eq!(human_duration(90000), "1d 1h");
    }

    #[test]
    fn a_palette_without_colour_leaves_text_alone() {
        assert_eq!(Palette::new(false).red("x"), "x");
        assert_eq!(Palette::new(true).red("x"), "\x1b[1;31mx\x1b[0m");
    }

    #[test]
    fn nested_field_errors_read_as_paths() {
        let detail = json!({"json": {
            "job_queue": ["Missing data for required field."],
            "test_data": {"test_cmds": ["Not a valid string or list."]},
            "tags": {"1": ["Not a valid string."]},
        }});
        let lines = field_error_lines(&detail);
        assert_eq!(
            lines,
            [
                "job_queue: Missing data for required field.",
                "tags[1]: Not a valid string.",
                "test_data.test_cmds: Not a valid string or list.",
            ]
        );
    }

    #[test]
    fn query_errors_say_they_are_query_parameters() {
        let lines = field_error_lines(&json!({"query": {"start_fragment": ["Not a valid integer."]}}));
        assert_eq!(lines, ["query parameter start_fragment: Not a valid integer."]);
    }

    #[test]
    fn a_refused_job_lists_every_field_after_the_message() {
        let e = CliError::JobRefused {
            origin: "job.yaml".into(),
            message: "Validation error".into(),
            fields: vec!["job_queue: Missing data for required field.".into()],
        };
        assert_eq!(
            error_lines(&e),
            [
                "the server refused the job in job.yaml: Validation error",
                "job_queue: Missing data for required field."
            ]
        );
    }
}
