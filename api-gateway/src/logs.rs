//! A run's output as Testflinger shows it: the current attempt's fragments, grouped by phase.
//!
//! Fragments are numbered per attempt and stream from 0 (their `seq`). Bytes are joined before
//! they are decoded, so a character split across two fragments survives; invalid UTF-8 becomes
//! U+FFFD rather than an error.

use broker_schema::messages::LogStream;
use broker_schema::{JobState, Millis, Phase, ValidationErrors};
use flinger_api::{LogAnswer, PhaseLog};
use flinger_store::{JobRecord, OutputFragment, OutputQuery};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The query string of `GET /v1/result/<id>/log/<type>`, as sent.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LogParams {
    pub start_fragment: Option<String>,
    pub start_timestamp: Option<String>,
    pub phase: Option<String>,
    /// [ext] Long poll: seconds to wait for a fragment to pass the filters (at most
    /// [`MAX_WAIT`]).
    pub wait: Option<String>,
}

/// The longest a long-polling log request waits.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Which fragments a log request wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Fragments numbered at least this.
    pub start_fragment: u64,
    /// Fragments written at or after this instant.
    pub since: Option<Millis>,
    /// One phase only.
    pub phase: Option<Phase>,
    /// [ext] How long to wait for a fragment when none passes yet.
    pub wait: Option<std::time::Duration>,
}

impl LogFilter {
    /// Parses the query string, naming every bad parameter.
    pub fn parse(p: &LogParams) -> Result<LogFilter, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut filter = LogFilter::default();
        if let Some(s) = p.start_fragment.as_deref() {
            match s.trim().parse::<i64>() {
                Ok(n) if n >= 0 => filter.start_fragment = n as u64,
                Ok(_) => errors.add("start_fragment", "Must be greater than or equal to 0."),
                Err(_) => errors.add("start_fragment", "Not a valid integer."),
            }
        }
        if let Some(s) = p.start_timestamp.as_deref() {
            match parse_timestamp(s) {
                Some(t) => filter.since = Some(t),
                None => errors.add("start_timestamp", "Not a valid datetime."),
            }
        }
        if let Some(s) = p.wait.as_deref() {
            match s.trim().parse::<f64>() {
                Ok(w) if (0.0..=MAX_WAIT.as_secs_f64()).contains(&w) => {
                    filter.wait = Some(std::time::Duration::from_secs_f64(w))
                }
                Ok(_) => errors.add("wait", format!("Must be between 0 and {}.", MAX_WAIT.as_secs())),
                Err(_) => errors.add("wait", "Not a valid number."),
            }
        }
        if let Some(s) = p.phase.as_deref() {
            match Phase::parse(s) {
                Some(ph) => filter.phase = Some(ph),
                None => errors.add("phase", format!("Must be one of: {}.", phase_names().join(", "))),
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }

    pub fn query(&self, job_id: Uuid, attempt: u32, stream: LogStream) -> OutputQuery {
        OutputQuery {
            from_seq: self.start_fragment,
            phase: self.phase,
            since: self.since,
            ..OutputQuery::all(job_id, attempt, stream)
        }
    }
}

fn phase_names() -> Vec<&'static str> {
    Phase::ALL.iter().map(|p| p.as_str()).collect()
}

/// ISO-8601: RFC 3339 with an offset, or without one (then UTC, as Python's `isoformat()`
/// writes naive datetimes).
pub fn parse_timestamp(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Some(t) = Millis::parse_rfc3339(s) {
        return Some(t);
    }
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let t = time::PrimitiveDateTime::parse(s, format).ok()?.assume_utc();
    Some(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// Holds back what a follower could miss. Competing schedulers store a live run's fragments in
/// any order, so fragment n+1 may be readable before fragment n: a follower shown n+1 asks from
/// n+2 next and never sees n. While the job's attempt is live (`live`), an answer therefore
/// ends at the first missing number after `from`. Once the attempt is over every fragment is
/// stored (a run's end waits for its output), so nothing is held back; nor with a timestamp or
/// phase filter, whose answers have gaps by design.
pub fn hold_back_after_gap(fragments: &mut Vec<OutputFragment>, filter: &LogFilter, live: bool) {
    if !live || filter.since.is_some() || filter.phase.is_some() {
        return;
    }
    fragments.sort_by_key(|f| f.seq);
    let contiguous = fragments
        .iter()
        .zip(filter.start_fragment..)
        .take_while(|(f, expected)| f.seq == *expected)
        .count();
    fragments.truncate(contiguous);
}

/// A started phase with no fragment (yet, or past the filter).
fn empty_log() -> PhaseLog {
    PhaseLog {
        last_fragment_number: -1,
        log_data: String::new(),
    }
}

/// Groups fragments by phase, joining each phase's bytes in `seq` order.
pub fn by_phase(fragments: &[OutputFragment]) -> BTreeMap<Phase, PhaseLog> {
    let mut sorted: Vec<&OutputFragment> = fragments.iter().collect();
    sorted.sort_by_key(|f| f.seq);
    let mut bytes: BTreeMap<Phase, (i64, Vec<u8>)> = BTreeMap::new();
    for f in sorted {
        let (last, data) = bytes.entry(f.phase).or_insert((-1, Vec::new()));
        *last = (*last).max(f.seq as i64);
        data.extend_from_slice(&f.data);
    }
    bytes
        .into_iter()
        .map(|(phase, (last, data))| {
            let log_data = String::from_utf8_lossy(&data).into_owned();
            (
                phase,
                PhaseLog {
                    last_fragment_number: last,
                    log_data,
                },
            )
        })
        .collect()
}

/// The phases a job has started in its current attempt: those with an exit code and the one
/// running now. They appear in a log answer even when the filter left them no fragment.
pub fn phases_started(job: &JobRecord) -> BTreeSet<Phase> {
    let mut phases: BTreeSet<Phase> = job.phase_status.keys().filter_map(|k| Phase::parse(k)).collect();
    if let Some(p) = running_phase(job.state) {
        phases.insert(p);
    }
    phases
}

/// The phase a job in `state` is running, if any.
pub fn running_phase(state: JobState) -> Option<Phase> {
    Phase::ALL.into_iter().find(|p| JobState::from_phase(*p) == state)
}

/// `{"<stream>": {"<phase>": {"last_fragment_number": n, "log_data": "…"}}}`: one entry per
/// phase in `started` or with fragments, or only `filter.phase` when one was asked for.
pub fn log_answer(
    stream: LogStream,
    filter: &LogFilter,
    started: &BTreeSet<Phase>,
    fragments: &[OutputFragment],
) -> LogAnswer {
    let mut logs = by_phase(fragments);
    match filter.phase {
        Some(only) => {
            logs.retain(|p, _| *p == only);
            logs.entry(only).or_insert_with(empty_log);
        }
        None => {
            for p in started {
                logs.entry(*p).or_insert_with(empty_log);
            }
        }
    }
    let phases = logs
        .into_iter()
        .map(|(p, log)| (p.as_str().to_owned(), log))
        .collect();
    LogAnswer::from([(stream.as_str().to_owned(), phases)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frag(seq: u64, phase: Phase, data: &[u8]) -> OutputFragment {
        OutputFragment {
            job_id: Uuid::nil(),
            attempt: 1,
            stream: LogStream::Output,
            seq,
            phase,
            at: Millis(seq as i64),
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_live_runs_answer_ends_at_its_first_missing_fragment() {
        let seqs = |frags: &[OutputFragment]| frags.iter().map(|f| f.seq).collect::<Vec<_>>();
        let stored = || {
            vec![
                frag(5, Phase::Test, b"e"),
                frag(3, Phase::Test, b"c"),
                frag(2, Phase::Test, b"b"),
            ]
        };
        let from = |n| LogFilter {
            start_fragment: n,
            ..Default::default()
        };
        let mut live = stored();
        hold_back_after_gap(&mut live, &from(2), true);
        assert_eq!(seqs(&live), [2, 3], "4 is not stored yet: 5 waits for it");
        let mut missing_first = stored();
        hold_back_after_gap(&mut missing_first, &from(1), true);
        assert!(missing_first.is_empty());
        let mut ended = stored();
        hold_back_after_gap(&mut ended, &from(2), false);
        assert_eq!(seqs(&ended), [5, 3, 2], "an ended run's answer holds everything");
        let mut by_phase = stored();
        let filter = LogFilter {
            phase: Some(Phase::Test),
            ..from(0)
        };
        hold_back_after_gap(&mut by_phase, &filter, true);
        assert_eq!(by_phase.len(), 3, "a phase filter's answer has gaps by design");
    }

    #[test]
    fn fragments_are_joined_per_phase_before_decoding() {
        let euro = "€".as_bytes();
        let frags = [
            frag(2, Phase::Test, &euro[1..]),
            frag(0, Phase::Setup, b"hello\n"),
            frag(1, Phase::Test, &euro[..1]),
        ];
        let logs = by_phase(&frags);
        assert_eq!(
            logs[&Phase::Setup],
            PhaseLog {
                last_fragment_number: 0,
                log_data: "hello\n".into()
            }
        );
        assert_eq!(
            logs[&Phase::Test],
            PhaseLog {
                last_fragment_number: 2,
                log_data: "€".into()
            }
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let logs = by_phase(&[frag(0, Phase::Test, b"a\xffb")]);
        assert_eq!(logs[&Phase::Test].log_data, "a\u{fffd}b");
    }

    #[test]
    fn started_phases_without_fragments_show_minus_one() {
        let started = BTreeSet::from([Phase::Setup, Phase::Test]);
        let v = log_answer(
            LogStream::Output,
            &LogFilter::default(),
            &started,
            &[frag(3, Phase::Test, b"x")],
        );
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            json!({"output": {
                "setup": {"last_fragment_number": -1, "log_data": ""},
                "test": {"last_fragment_number": 3, "log_data": "x"},
            }})
        );
    }

    #[test]
    fn a_requested_phase_is_the_only_entry() {
        let filter = LogFilter {
            phase: Some(Phase::Provision),
            ..Default::default()
        };
        let v = log_answer(LogStream::Serial, &filter, &BTreeSet::from([Phase::Setup]), &[]);
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            json!({"serial": {"provision": {"last_fragment_number": -1, "log_data": ""}}})
        );
    }

    #[test]
    fn query_parameters_are_checked() {
        let ok = LogFilter::parse(&LogParams {
            start_fragment: Some("4".into()),
            start_timestamp: Some("2024-01-02T03:04:05.5".into()),
            phase: Some("test".into()),
            wait: Some("2.5".into()),
        })
        .unwrap();
        assert_eq!(ok.wait, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(ok.start_fragment, 4);
        assert_eq!(ok.since, Millis::parse_rfc3339("2024-01-02T03:04:05.500Z"));
        assert_eq!(ok.phase, Some(Phase::Test));
        let bad = LogFilter::parse(&LogParams {
            start_fragment: Some("-1".into()),
            start_timestamp: Some("yesterday".into()),
            phase: Some("lunch".into()),
            wait: Some("600".into()),
        })
        .unwrap_err();
        assert_eq!(bad.fields.len(), 4);
    }
}
