//! A database log read as the file's bytes: rows `(id, line)` in id order
//! become the lines of a JSON Lines stream, with a blank line for every id
//! in between (ids missing, or another group's rows), so that a line's
//! number in the stream is its row id (what [`ReadIssue`](super::ReadIssue)
//! reports). Shared by the SQLite and PostgreSQL logs.

use std::collections::VecDeque;
use std::io::{self, Read};

/// Where the rows come from: the next page (empty at the end).
pub(super) trait RowSource: Send {
    /// The next rows after the last one, in id order; empty when there are
    /// no more.
    fn next_rows(&mut self) -> io::Result<Vec<(i64, Vec<u8>)>>;
}

/// A [`Read`] over the rows of a [`RowSource`].
pub(super) struct RowLines<S> {
    source: S,
    last_id: i64,
    rows: VecDeque<(i64, Vec<u8>)>,
    blank_lines: u64,
    buf: VecDeque<u8>,
    done: bool,
}

impl<S: RowSource> RowLines<S> {
    pub(super) fn new(source: S) -> RowLines<S> {
        RowLines {
            source,
            last_id: 0,
            rows: VecDeque::new(),
            blank_lines: 0,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// Queues the next row's blank lines and text; false at the end.
    fn next_row(&mut self) -> io::Result<bool> {
        if self.rows.is_empty() && !self.done {
            match self.source.next_rows() {
                Ok(rows) if rows.is_empty() => self.done = true,
                Ok(rows) => self.rows.extend(rows),
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        let Some((id, mut bytes)) = self.rows.pop_front() else {
            return Ok(false);
        };
        // One row, one line, whatever it holds.
        bytes.retain(|&b| b != b'\n' && b != b'\r');
        bytes.push(b'\n');
        self.blank_lines = id
            .saturating_sub(self.last_id)
            .saturating_sub(1)
            .unsigned_abs();
        self.last_id = id;
        self.buf.extend(bytes);
        Ok(true)
    }
}

impl<S: RowSource> Read for RowLines<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.blank_lines > 0 {
                let n = out
                    .len()
                    .min(usize::try_from(self.blank_lines).unwrap_or(usize::MAX));
                out[..n].fill(b'\n');
                self.blank_lines -= n as u64;
                return Ok(n);
            }
            if !self.buf.is_empty() || out.is_empty() {
                let n = out.len().min(self.buf.len());
                for (slot, byte) in out.iter_mut().zip(self.buf.drain(..n)) {
                    *slot = byte;
                }
                return Ok(n);
            }
            if !self.next_row()? {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pages(Vec<Vec<(i64, Vec<u8>)>>);

    impl RowSource for Pages {
        fn next_rows(&mut self) -> io::Result<Vec<(i64, Vec<u8>)>> {
            Ok(if self.0.is_empty() {
                Vec::new()
            } else {
                self.0.remove(0)
            })
        }
    }

    #[test]
    fn rows_become_lines_numbered_by_their_ids() {
        let pages = Pages(vec![
            vec![(1, b"a".to_vec()), (2, b"b\nc".to_vec())],
            vec![(5, b"d".to_vec())],
        ]);
        let mut text = String::new();
        RowLines::new(pages).read_to_string(&mut text).unwrap();
        assert_eq!(text, "a\nbc\n\n\nd\n");
    }

    struct Failing;

    impl RowSource for Failing {
        fn next_rows(&mut self) -> io::Result<Vec<(i64, Vec<u8>)>> {
            Err(io::Error::other("gone"))
        }
    }

    #[test]
    fn a_source_error_is_returned_once_then_the_end() {
        let mut r = RowLines::new(Failing);
        let mut buf = [0u8; 8];
        assert!(r.read(&mut buf).is_err());
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
