//! What a log path is on disk: a regular file, or something a log must not
//! be opened as (a directory, a device, ...). Shared by the file writer and
//! reader and the SQLite log.

use std::fs::FileType;
use std::io;
use std::path::Path;

use super::LogError;

/// What a file type is, when it is not a regular file.
pub(super) fn special_kind(ft: &FileType) -> Option<&'static str> {
    if ft.is_file() {
        return None;
    }
    if ft.is_dir() {
        return Some("directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        for (is, kind) in [
            (ft.is_fifo(), "FIFO"),
            (ft.is_char_device(), "character device"),
            (ft.is_block_device(), "block device"),
            (ft.is_socket(), "socket"),
        ] {
            if is {
                return Some(kind);
            }
        }
    }
    Some("special file")
}

/// Fails with [`LogError::NotAFile`] when `path` exists and is not a regular
/// file (symbolic links are followed); a missing path is fine.
pub(super) fn refuse_non_file(path: &Path) -> Result<(), LogError> {
    match std::fs::metadata(path) {
        Ok(m) => match special_kind(&m.file_type()) {
            Some(kind) => Err(LogError::NotAFile {
                path: path.to_path_buf(),
                kind,
            }),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::from_io(path, "stat", e)),
    }
}
