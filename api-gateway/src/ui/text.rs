//! How things are shown: output as escaped text with ANSI colours as spans, times, durations.
//!
//! Output is text, never markup: every character that means something in HTML is escaped, and
//! the only markup added is `<span class="…">` for ANSI SGR colours and bold (class names from a
//! fixed set). Other escape sequences and control characters are dropped. `assets/ui.js` does
//! the same for output that arrives live, building text nodes.

use broker_schema::Millis;
use std::fmt::Write;

/// `s` HTML-escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// The classes of one SGR state.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bold: bool,
}

impl Style {
    fn apply(&mut self, params: &str) {
        let codes: Vec<u32> = if params.is_empty() {
            vec![0]
        } else {
            params.split(';').map(|p| p.parse().unwrap_or(0)).collect()
        };
        for code in codes {
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                39 => self.fg = None,
                _ => {}
            }
        }
    }

    fn classes(&self) -> String {
        let mut c = vec![];
        if let Some(fg) = self.fg {
            c.push(format!("ansi-{fg}"));
        }
        if self.bold {
            c.push("ansi-b".to_owned());
        }
        c.join(" ")
    }
}

/// Output as HTML: escaped, ANSI colours as spans, other escapes and controls dropped.
pub fn ansi_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut style = Style::default();
    let mut open = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut params = String::new();
                let mut last = None;
                for p in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&p) {
                        last = Some(p);
                        break;
                    }
                    params.push(p);
                }
                if last == Some('m') {
                    style.apply(&params);
                    if open {
                        out.push_str("</span>");
                        open = false;
                    }
                    let classes = style.classes();
                    if !classes.is_empty() {
                        let _ = write!(out, "<span class=\"{classes}\">");
                        open = true;
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => push_escaped(&mut out, c),
        }
    }
    if open {
        out.push_str("</span>");
    }
    out
}

/// `2026-12-05 03:40:12 UTC`.
pub fn when(t: Millis) -> String {
    let s = t.to_rfc3339();
    // 2026-12-05T03:40:12.123Z → 2026-12-05 03:40:12 UTC
    let trimmed = s.get(..19).unwrap_or(&s).replace('T', " ");
    format!("{trimmed} UTC")
}

pub fn opt_when(t: Option<Millis>) -> String {
    t.map(when).unwrap_or_default()
}

/// `42 s`, `3 min 05 s`, `2 h 07 min`, `3 d 04 h`.
pub fn duration_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {:02} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long from `from` to `to` (or to now, while running).
pub fn span(from: Option<Millis>, to: Option<Millis>) -> String {
    match from {
        Some(f) => duration_secs(to.unwrap_or_else(Millis::now).since(f).as_secs()),
        None => String::new(),
    }
}

/// `5 s ago`, `3 min ago`.
pub fn ago(t: Millis, now: Millis) -> String {
    if t.0 <= 0 {
        return "never".to_owned();
    }
    format!("{} ago", duration_secs(now.since(t).as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_markup_is_escaped_and_never_passes_through() {
        let html = ansi_html("<script>alert(1)</script> & <img src=x onerror=\"alert(2)\">");
        assert_eq!(
            html,
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=&quot;alert(2)&quot;&gt;"
        );
    }

    #[test]
    fn ansi_colours_become_spans_and_other_escapes_vanish() {
        assert_eq!(
            ansi_html("\u{1b}[31mred\u{1b}[0m plain \u{1b}[1;92mbold green\u{1b}[m\u{1b}[2K!"),
            "<span class=\"ansi-1\">red</span> plain <span class=\"ansi-10 ansi-b\">bold green</span>!"
        );
        assert_eq!(ansi_html("a\rb\u{7}c\n"), "abc\n");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_secs(42), "42 s");
        assert_eq!(duration_secs(185), "3 min 05 s");
        assert_eq!(duration_secs(7620), "2 h 07 min");
        assert_eq!(duration_secs(3 * 86_400 + 4 * 3600), "3 d 04 h");
    }
}
