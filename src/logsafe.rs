//! Caller-supplied text as a log field: the one place it is escaped and truncated.
//!
//! Why: the text log is read by people and parsed by tools. A caller who can put a newline in a field can forge a
//! log line, an ANSI escape can rewrite a terminal, and a 15 MiB value makes a 15 MB line. Every string that
//! came from a request (hookInstance, service ids in paths, JWT `kid`/`iss`/`jti`, feedback card ids and
//! reasons) goes through [`caller_text`] before it reaches `tracing`; ids and counts the service computed
//! itself do not need to.

use std::fmt;
use std::time::{Duration, Instant};

/// At most this many characters of a caller's value are logged; the rest is replaced by `…`.
pub const MAX_CHARS: usize = 80;

/// A caller's string as it may be logged: control and formatting characters (newlines, ANSI escapes, bidi
/// overrides, line separators) written as `\u{…}`, a backslash doubled so escapes stay unambiguous, and at most
/// [`MAX_CHARS`] characters.
pub fn caller_text(text: &str) -> CallerText<'_> {
    CallerText(text)
}

/// See [`caller_text`]; `Display` does the escaping, so nothing is allocated unless the field is written.
#[derive(Clone, Copy)]
pub struct CallerText<'a>(&'a str);

impl fmt::Display for CallerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if needs_escape(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        if chars.next().is_some() {
            f.write_char('…')?;
        }
        Ok(())
    }
}

impl fmt::Debug for CallerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// C0/C1 controls (newline, ESC, DEL …), and the Unicode characters that move or hide text when displayed:
/// line and paragraph separators, bidirectional overrides and isolates, zero-width characters, the BOM.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}')
}

/// A warning that repeats at most every ten seconds, saying how often its event happened meanwhile: a flood of
/// connections or of bad tokens must not become a flood of log lines. Hand-written because it is six lines; `tracing` has no
/// rate limit of its own.
#[derive(Debug, Default)]
pub struct Occasional {
    last: Option<Instant>,
    times: u64,
}

impl Occasional {
    const EVERY: Duration = Duration::from_secs(10);

    pub const fn new() -> Occasional {
        Occasional { last: None, times: 0 }
    }

    pub fn warn(&mut self, log: impl FnOnce(u64)) {
        self.times += 1;
        if self.last.is_none_or(|last| last.elapsed() >= Self::EVERY) {
            log(self.times);
            self.times = 0;
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_terminal_escapes_are_written_as_escapes() {
        let forged = "abc\n2026-11-30T00:00:00Z  INFO request done status=200\r\u{1b}[2J\u{202e}x\\n";
        let logged = caller_text(forged).to_string();
        assert!(!logged.chars().any(|c| c.is_control() || c == '\u{202e}'), "{logged}");
        assert_eq!(
            logged,
            "abc\\u{a}2026-11-30T00:00:00Z  INFO request done status=200\\u{d}\\u{1b}[2J\\u{202e}x\\\\n"
        );
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(10_000);
        let logged = caller_text(&long).to_string();
        assert_eq!(logged.chars().count(), MAX_CHARS + 1);
        assert!(logged.ends_with('…'));
        assert_eq!(caller_text("short").to_string(), "short");
        assert_eq!(caller_text(&"a".repeat(MAX_CHARS)).to_string().len(), MAX_CHARS);
    }
}
