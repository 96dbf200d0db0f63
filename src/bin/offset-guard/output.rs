//! Printing: escaping text read from the log, aligned tables, times, and
//! telling a closed pipe from other write errors.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::SystemTime;

use unicode_width::UnicodeWidthStr;

/// `s` safe to print on a terminal and in one table cell, escaped the same
/// way by every command ([`crate::text::escape`]: `\n`, `\e`, `\x07`,
/// `\u{202e}`, ...). Borrowed when nothing needs escaping.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    let escaped = crate::text::escape(s);
    if escaped == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(escaped)
    }
}

/// Columns of display width (CJK and emoji count two).
pub(crate) struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            widths: header.iter().map(|h| h.width()).collect(),
        }
    }

    /// Widens the columns for `row` (already escaped).
    pub(crate) fn fit(&mut self, row: &[Cow<'_, str>]) {
        for (w, cell) in self.widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }

    /// Writes one row padded to the column widths; the last column is not
    /// padded, trailing spaces are trimmed.
    pub(crate) fn write_row<S: AsRef<str>>(
        &self,
        out: &mut impl Write,
        row: &[S],
    ) -> io::Result<()> {
        let mut line = String::with_capacity(256);
        for (i, (cell, w)) in row.iter().zip(&self.widths).enumerate() {
            let cell = cell.as_ref();
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = w.saturating_sub(cell.width()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let trimmed = line.trim_end_matches(' ');
        out.write_all(trimmed.as_bytes())?;
        out.write_all(b"\n")
    }
}

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T14:30:36.123Z`.
pub(crate) fn format_time(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => {
            let ms = jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts);
            format!("{ms:.3}")
        }
        Err(_) => "-".to_owned(),
    }
}

/// How writing the output ended early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The reader went away (broken pipe): stop quietly.
    Closed,
    /// Another write error.
    Failed(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Stop::Closed
        } else {
            Stop::Failed(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_control_and_bidi_characters() {
        assert!(matches!(clean("orders-ä-注文"), Cow::Borrowed(_)));
        assert_eq!(clean("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(clean("\u{1b}]0;pwned\u{7}"), "\\e]0;pwned\\x07");
        assert_eq!(clean("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
    }

    #[test]
    fn table_pads_by_display_width() {
        let mut t = Table::new(&["A", "B"]);
        t.fit(&[Cow::Borrowed("注文"), Cow::Borrowed("x")]);
        let mut out = Vec::new();
        t.write_row(&mut out, &["ab", "y"]).unwrap();
        t.write_row(&mut out, &["注文", "z"]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ab    y\n注文  z\n");
    }
}
