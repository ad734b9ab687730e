//! Masking secret values out of a job's output.
//!
//! The agent knows the values of the secrets a job uses (the scheduler resolves them when it
//! grants the lease) and masks them at the source, before a byte of output leaves the device
//! host; the gateway masks fragments posted over HTTP the same way. Every occurrence of a value
//! becomes [`MASK`].
//!
//! Output arrives in arbitrary pieces, so a value may be split across two of them:
//! [`StreamMasker`] holds back the end of a piece while it could still be the start of a value,
//! and releases it once the next piece (or the end of the stream) decides.

/// What a secret's value is replaced with.
pub const MASK: &[u8] = b"****";

/// The values to mask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Masker {
    /// Non-empty, distinct, longest first (a longer value wins over one it contains).
    values: Vec<Vec<u8>>,
}

impl Masker {
    /// Empty values are ignored (an unresolved secret is an empty string).
    pub fn new<I, S>(values: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values: Vec<Vec<u8>> = values
            .into_iter()
            .map(|v| v.as_ref().as_bytes().to_vec())
            .filter(|v| !v.is_empty())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Masker { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values masked, longest first.
    pub fn values(&self) -> &[Vec<u8>] {
        &self.values
    }

    /// `data` with every value masked.
    pub fn mask(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let done = self.scan(data, &mut out, true);
        debug_assert_eq!(done, data.len());
        out
    }

    /// `data` as text with every value masked.
    pub fn mask_str(&self, data: &str) -> String {
        if self.is_empty() {
            return data.to_owned();
        }
        String::from_utf8_lossy(&self.mask(data.as_bytes())).into_owned()
    }

    /// A masker for one stream of pieces.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            masker: self.clone(),
            pending: Vec::new(),
        }
    }

    /// Appends `data` to `out`, masked; returns how many bytes of `data` it consumed. Unless
    /// `at_end`, it stops before a position where a value could begin and `data` ends first.
    fn scan(&self, data: &[u8], out: &mut Vec<u8>, at_end: bool) -> usize {
        let mut i = 0;
        'bytes: while i < data.len() {
            let rest = &data[i..];
            if !at_end
                && self
                    .values
                    .iter()
                    .any(|v| v.len() > rest.len() && v.starts_with(rest))
            {
                return i;
            }
            for v in &self.values {
                if rest.starts_with(v) {
                    out.extend_from_slice(MASK);
                    i += v.len();
                    continue 'bytes;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        i
    }
}

/// Masks one stream given in pieces; see the module docs.
#[derive(Clone, Debug)]
pub struct StreamMasker {
    masker: Masker,
    /// Bytes held back: they could be the start of a value (shorter than the longest value).
    pending: Vec<u8>,
}

impl StreamMasker {
    /// The masked bytes that can be sent now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.masker.is_empty() {
            return data.to_vec();
        }
        self.pending.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.pending.len());
        let used = self.masker.scan(&self.pending, &mut out, false);
        self.pending.drain(..used);
        out
    }

    /// Releases what was held back (the stream ended, or a phase did).
    pub fn finish(&mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        self.masker.mask(&pending)
    }

    /// Whether bytes are held back.
    pub fn holds(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(m: &Masker, pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = m.stream();
        let mut out = vec![];
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn every_occurrence_is_masked() {
        let m = Masker::new(["hunter2", ""]);
        assert_eq!(
            m.mask(b"pw=hunter2 again hunter2!"),
            b"pw=**** again ****!".to_vec()
        );
        assert_eq!(m.mask_str("nothing here"), "nothing here");
    }

    #[test]
    fn a_longer_value_wins_over_one_it_contains() {
        let m = Masker::new(["abc", "abcdef"]);
        assert_eq!(m.mask(b"xabcdefx abcx"), b"x****x ****x".to_vec());
    }

    #[test]
    fn a_value_split_across_pieces_is_still_masked() {
        let m = Masker::new(["s3cr3t-value"]);
        let whole = b"token: s3cr3t-value; done".to_vec();
        for cut in 0..whole.len() {
            for cut2 in cut..whole.len() {
                let out = streamed(&m, &[&whole[..cut], &whole[cut..cut2], &whole[cut2..]]);
                assert_eq!(out, b"token: ****; done".to_vec(), "cut at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn only_a_possible_start_of_a_value_is_held_back() {
        let m = Masker::new(["secret"]);
        let mut s = m.stream();
        assert_eq!(s.push(b"hello sec"), b"hello ".to_vec());
        assert!(s.holds());
        assert_eq!(s.push(b"ond"), b"second".to_vec());
        assert!(!s.holds());
        assert_eq!(s.push(b"x"), b"x".to_vec());
    }

    #[test]
    fn no_values_means_no_change_and_no_holding() {
        let m = Masker::new(Vec::<String>::new());
        let mut s = m.stream();
        assert_eq!(s.push(b"abc"), b"abc".to_vec());
        assert!(!s.holds());
    }
}
