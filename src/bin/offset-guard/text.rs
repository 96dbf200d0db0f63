//! Safe terminal output: names and messages read from a log or a broker are
//! printed escaped, and table columns are measured by display width.

use std::fmt::Write as _;
use std::io::{self, Write};

use unicode_width::UnicodeWidthStr;

/// `s` with everything that could move the cursor, recolour the terminal or
/// reorder text replaced by a visible escape: C0 controls (`\n`, `\r`, `\t`,
/// ESC as `\e`, others as `\x01`), DEL and C1 controls (`\x7f`, `\u{9b}`),
/// bidirectional overrides and isolates and other invisible format characters
/// (`\u{202e}`, ...). A backslash is doubled so the escaped form is unambiguous.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A line of JSON (as serde_json writes it: C0 controls already escaped)
/// with DEL, C1 controls and the invisible characters of [`escape`] written
/// as `\uXXXX` escapes too, so it is still the same JSON but safe on a
/// terminal.
pub fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '\u{7f}' || is_invisible(c) {
            // All of them are in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// C1 controls, bidi controls, zero-width and other format characters that a
/// terminal would not show as themselves.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{80}'..='\u{9f}'       // C1 controls (CSI is \u{9b})
        | '\u{ad}'                // soft hyphen
        | '\u{61c}'               // Arabic letter mark
        | '\u{180e}'              // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}' // zero-width space/joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings and overrides
        | '\u{2060}'..='\u{206f}' // word joiner, bidi isolates, deprecated format chars
        | '\u{feff}'              // zero-width no-break space (BOM)
        | '\u{fff9}'..='\u{fffb}' // interlinear annotation
    )
}

/// Display width of an already escaped cell (East Asian wide characters
/// count 2, combining marks 0).
pub fn width(cell: &str) -> usize {
    UnicodeWidthStr::width(cell)
}

/// Writes `rows` under `header` as columns padded by display width, two
/// spaces apart; the last column is not padded. Cells must be escaped
/// already (see [`escape`]).
pub fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - width(cell) + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Output that goes on when the reader went away: once a write fails with
/// `BrokenPipe` (e.g. `| head`), the rest is discarded, so a command never
/// stops half-way because nobody reads its output.
pub struct PipeSafe<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> PipeSafe<W> {
    pub fn new(inner: W) -> Self {
        PipeSafe {
            inner,
            closed: false,
        }
    }
}

impl<W: Write> Write for PipeSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("orders"), "orders");
        assert_eq!(escape("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape("\u{1b}[2Jx\u{7}"), "\\e[2Jx\\x07");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            escape("\u{2066}x\u{2069}\u{200b}"),
            "\\u{2066}x\\u{2069}\\u{200b}"
        );
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("订单 é"), "订单 é");
    }

    #[test]
    fn json_stays_json_without_terminal_controls() {
        let raw = serde_json::to_string("a\u{1b}b\u{9b}c\u{202e}d\u{7f}é").unwrap();
        let safe = json_safe(&raw);
        assert_eq!(safe, r#""a\u001bb\u009bc\u202ed\u007fé""#);
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, "a\u{1b}b\u{9b}c\u{202e}d\u{7f}é");
    }

    #[test]
    fn columns_align_by_display_width() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["订单".to_string(), "1".to_string(), "x".to_string()],
            vec!["ab".to_string(), "22".to_string(), "y".to_string()],
        ];
        table(&mut out, &["TOPIC", "P", "LAST"], &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "TOPIC  P   LAST\n订单   1   x\nab     22  y\n");
    }
}
