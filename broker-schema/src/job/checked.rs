//! Deserializing a document into a declared shape, naming *every* bad field at once.
//!
//! serde stops at the first error. [`deserialize`] records it under its field's path (found by
//! `serde_path_to_error`), takes the offending value out of the document and deserializes again,
//! until what is left is accepted; list items keep their original index in the report. Each
//! error is said in marshmallow's words, as Testflinger's server says it. The rules themselves
//! are the types' ([`super::file`]): nothing here knows a field.

use super::ValidationErrors;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;
use std::collections::{HashMap, HashSet};

pub const MISSING: &str = "Missing data for required field.";
pub const UNKNOWN: &str = "Unknown field.";
pub const NOT_STRING: &str = "Not a valid string.";
pub const NOT_INTEGER: &str = "Not a valid integer.";
pub const NOT_LIST: &str = "Not a valid list.";
pub const NOT_MAPPING: &str = "Not a valid mapping type.";
pub const NOT_BOOL: &str = "Not a valid boolean.";

/// Separates a member's name from the message in [`about_member`].
const MEMBER: char = '\u{1f}';

/// The message of a rule over several members of a mapping, reported at one of them: a type's
/// `Deserialize` returns `Error::custom(about_member("agent", MISSING))` to name
/// `<its path>.agent`.
pub fn about_member(member: &str, message: &str) -> String {
    format!("{MEMBER}{member}{MEMBER}{message}")
}

/// Deserializes `doc` into `T`, or names every field that `T` refuses.
pub fn deserialize<T: DeserializeOwned>(mut doc: Value) -> Result<T, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let mut renumbered = Renumbered::default();
    // What was taken out, and the mappings a member was taken out of (original paths).
    let mut taken = HashSet::new();
    let mut thinned = HashSet::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(t) if errors.is_empty() => return Ok(t),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let at: Vec<Step> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Item(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let (member, message, ruled) = words(&e.inner().to_string());
        let mapping = renumbered.original(&at);
        let mut field = mapping.clone();
        field.extend(member);
        // What was taken out for its value is then missing: it was named already. So may be
        // what a rule over several members misses (an attachment needs `local` or `agent`; a
        // bad `local` was taken out).
        let consequence =
            message == MISSING && (taken.contains(&field) || (ruled && thinned.contains(&mapping)));
        if !consequence {
            errors.add(
                if field.is_empty() {
                    "_schema".to_owned()
                } else {
                    field.join(".")
                },
                message,
            );
        }
        if let Some((Step::Key(_), parent)) = at.split_last() {
            thinned.insert(renumbered.original(parent));
        }
        taken.insert(renumbered.original(&at));
        // What is taken out is the value at the error's path: for a missing member, the mapping
        // that lacks it. The root cannot be: serde finds a missing member after every other
        // field of its mapping, so nothing is left to find then.
        if at.is_empty() || !renumbered.remove(&mut doc, &at) {
            return Err(errors);
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Item(usize),
}

/// For each list items were taken out of (by its original path), the original index of each
/// item left.
#[derive(Default)]
struct Renumbered(HashMap<Vec<String>, Vec<usize>>);

impl Renumbered {
    /// The original path of the value now at `at`.
    fn original(&self, at: &[Step]) -> Vec<String> {
        let mut path = Vec::with_capacity(at.len());
        for step in at {
            let part = match step {
                Step::Key(k) => k.clone(),
                Step::Item(i) => self
                    .0
                    .get(&path)
                    .map_or(*i, |left: &Vec<usize>| left[*i])
                    .to_string(),
            };
            path.push(part);
        }
        path
    }

    /// Takes the value at `at` out of `doc`; false if there is none.
    fn remove(&mut self, doc: &mut Value, at: &[Step]) -> bool {
        let (last, parent_at) = at.split_last().expect("not the root");
        let mut node = doc;
        for step in parent_at {
            let next = match (step, node) {
                (Step::Key(k), Value::Object(m)) => m.get_mut(k),
                (Step::Item(i), Value::Array(a)) => a.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        match (last, node) {
            (Step::Key(k), Value::Object(m)) => m.remove(k).is_some(),
            (Step::Item(i), Value::Array(a)) if *i < a.len() => {
                let list = self.original(parent_at);
                let len = a.len();
                self.0
                    .entry(list)
                    .or_insert_with(|| (0..len).collect())
                    .remove(*i);
                a.remove(*i);
                true
            }
            _ => false,
        }
    }
}

/// serde's message in marshmallow's words, the member it names (a missing field's, or one
/// named by [`about_member`]), and whether a rule over several members said it.
fn words(message: &str) -> (Option<String>, String, bool) {
    let ruled = message.starts_with(MEMBER);
    let (member, message) = plain_words(message);
    (member, message, ruled)
}

fn plain_words(message: &str) -> (Option<String>, String) {
    if let Some(rest) = message.strip_prefix(MEMBER)
        && let Some((member, message)) = rest.split_once(MEMBER)
    {
        return (Some(member.to_owned()), message.to_owned());
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((member, _)) = rest.split_once('`')
    {
        return (Some(member.to_owned()), MISSING.to_owned());
    }
    if message.starts_with("unknown field `") {
        return (None, UNKNOWN.to_owned());
    }
    if message.starts_with("invalid type: ")
        && let Some((_, expected)) = message.rsplit_once(", expected ")
    {
        let said = match expected {
            "a string" => NOT_STRING,
            "a boolean" => NOT_BOOL,
            "a sequence" => NOT_LIST,
            e if e == "a map" || e.starts_with("struct ") => NOT_MAPPING,
            e if e.starts_with('u') || e.starts_with('i') => NOT_INTEGER,
            _ => return (None, message.to_owned()),
        };
        return (None, said.to_owned());
    }
    (None, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
        tags: Option<Vec<String>>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    fn fields(doc: Value) -> std::collections::BTreeMap<String, Vec<String>> {
        deserialize::<Shape>(doc).unwrap_err().fields
    }

    #[test]
    fn every_refused_field_is_named_once_in_marshmallows_words() {
        let f = fields(json!({"tags": "x", "bogus": 1, "inner": {"flag": "yes please"}}));
        assert_eq!(f["name"], [MISSING]);
        assert_eq!(f["tags"], [NOT_LIST]);
        assert_eq!(f["bogus"], [UNKNOWN]);
        assert_eq!(f["inner.flag"], [NOT_BOOL]);
        assert_eq!(f.len(), 4, "{f:?}");
    }

    #[test]
    fn list_items_keep_their_index_when_earlier_ones_are_taken_out() {
        let f = fields(json!({"name": "n", "tags": [1, "ok", 2, true]}));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["tags.0", "tags.2", "tags.3"]);
        assert_eq!(f["tags.3"], [NOT_STRING]);
    }

    #[test]
    fn a_missing_member_is_named_under_its_mapping() {
        let f = fields(json!({"name": "n", "inner": {}}));
        assert_eq!(f["inner.flag"], [MISSING]);
        assert_eq!(f.len(), 1);
    }
}
