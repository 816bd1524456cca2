//! Text from sites and the Marketplace (company names, contacts, descriptions, URLs, client
//! keys) is hostile wherever it is shown. Two treatments, one per place it ends up
//! (docs/operations.md#hostile-text):
//!
//! * [`control`] / [`Escaped`] — control characters written as visible escapes (`\x1b`, `\n`,
//!   `\u{9b}`, `\u{202e}`), for terminals (the CLI's tables and `installations show`) and
//!   logs: an ESC or OSC-8 sequence cannot repaint the screen or plant a link, and a newline
//!   cannot forge an output or log line.
//! * [`cut`] — a short field from outside (a licence type, an entitlement id, a cloudId) is
//!   kept to [`FIELD_MAX`] characters when it is read, before it is stored or shown.
//! * [`csv_cell`] — a cell that a spreadsheet would run as a formula (it begins with `=`, `+`,
//!   `-`, `@`, tab or carriage return) gets a leading `'`, as the OWASP "CSV Injection" page
//!   recommends (<https://owasp.org/www-community/attacks/CSV_Injection>).

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` is shown escaped: C0 controls (newline, tab and carriage return included),
/// DEL, C1 controls, and the Unicode bidirectional overrides and isolates, which reorder what
/// a terminal shows ("Trojan Source", <https://trojansource.codes/>).
fn is_hostile(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escaped(out: &mut impl Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// `s` with every control character written as a visible escape; borrowed when there is
/// none (the common case).
pub fn control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hostile(c) {
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Displays a string with [`control`]'s escapes, without allocating: for log fields
/// (`tracing::info!(company = %Escaped(&name))`).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        EscapingWriter(f).write_str(self.0)
    }
}

/// A [`fmt::Write`] adapter that escapes control characters as they pass through, so a
/// formatted value (of any type) can be escaped on its way out.
pub struct EscapingWriter<W>(pub W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| is_hostile(*c)) {
            self.0.write_str(&rest[..at])?;
            write_escaped(&mut self.0, c)?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Longest text (in characters) kept of a short field read from Atlassian or a site: these
/// bytes end up stored and in every listing.
pub const FIELD_MAX: usize = 200;

/// `s` cut to [`FIELD_MAX`] characters, borrowed.
pub fn cut(s: &str) -> &str {
    s.char_indices().nth(FIELD_MAX).map_or(s, |(i, _)| &s[..i])
}

/// [`cut`] for an owned field: the same `String` when it is short enough (no copy).
pub fn cut_owned(mut s: String) -> String {
    let end = cut(&s).len();
    s.truncate(end);
    s
}

/// A CSV cell that a spreadsheet will show as text: a value beginning with `=`, `+`, `-`,
/// `@`, tab or carriage return gets a leading `'`.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

/// [`csv_cell`] over a whole record.
pub fn csv_record<I, S>(cells: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    cells
        .into_iter()
        .map(|c| csv_cell(c.as_ref()).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_to_their_maximum_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(FIELD_MAX + 5);
        assert_eq!(cut(&long).chars().count(), FIELD_MAX);
        assert_eq!(cut_owned(long.clone()), cut(&long));
        assert_eq!(cut_owned("é".repeat(FIELD_MAX)), "é".repeat(FIELD_MAX));
        // A licence read from a FIT is cut when it is parsed, once per token.
        let raw = crate::forge::fit::RawLicense {
            kind: Some("x".repeat(10_000)),
            ccp_entitlement_id: Some(String::new()),
            ..Default::default()
        };
        let l = crate::forge::fit::FitLicense::from_raw(raw);
        assert_eq!(l.license_type.map(|t| t.len()), Some(FIELD_MAX));
        assert_eq!(l.entitlement_id, None);
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(control("Acme Corp · Zürich"), Cow::Borrowed(_)));
        assert_eq!(control("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(
            control("\x1b]8;;http://evil.invalid\x07click\x1b]8;;\x07"),
            "\\x1b]8;;http://evil.invalid\\x07click\\x1b]8;;\\x07"
        );
        assert_eq!(
            control("line\nforged\r\tx\x7f"),
            "line\\nforged\\r\\tx\\x7f"
        );
        assert_eq!(control("c1\u{9b}2J"), "c1\\u{9b}2J");
        assert_eq!(control("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(Escaped("a\nb").to_string(), "a\\nb");
        let mut s = String::new();
        let value = "x\x1by";
        write!(EscapingWriter(&mut s), "{value}|{:?}", 5).unwrap();
        assert_eq!(s, "x\\x1by|5");
    }

    #[test]
    fn formula_cells_are_quoted() {
        for (cell, want) in [
            (
                "=HYPERLINK(\"http://a.invalid\")",
                "'=HYPERLINK(\"http://a.invalid\")",
            ),
            ("+1 555 0100", "'+1 555 0100"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("Acme = Corp", "Acme = Corp"),
            ("", ""),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ] {
            assert_eq!(csv_cell(cell), want, "{cell:?}");
        }
        assert_eq!(csv_record(["a", "=b"]), vec!["a", "'=b"]);
    }
}
