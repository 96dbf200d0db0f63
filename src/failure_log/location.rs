//! Where a failed-offset log is: a file path, or a database URL.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{LogBuilder, LogError, LogStream};

/// Where a failed-offset log is kept: a JSON Lines file, or (cargo feature
/// `sqlite`) a table in a SQLite database, or (cargo feature `postgres`) a
/// table in PostgreSQL. [`LogLocation::parse`] reads the form the
/// `offset-guard` command takes: a path, or a URL `sqlite:///abs/path.db` /
/// `sqlite:relative/path.db` / `postgresql://user@host:port/db` /
/// `postgres://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogLocation {
    /// A JSON Lines file (with its rotated files).
    File(PathBuf),
    /// The `offset_guard_failed_offsets` table of the SQLite database at this path.
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// The `offset_guard_failed_offsets` table in PostgreSQL (cargo feature
    /// `postgres`; see [`FailedOffsetLog::postgres`](super::FailedOffsetLog::postgres)).
    #[cfg(feature = "postgres")]
    Postgres {
        /// The URL, as given (it may hold a password).
        url: String,
        /// The URL with its password replaced by `***` (for messages).
        name: PathBuf,
    },
}

/// URL schemes recognised even without `://` (so `sqlite:app.db` is a URL,
/// `notes:today.jsonl` a file name).
const KNOWN_SCHEMES: &[&str] = &["sqlite", "postgres", "postgresql"];

impl LogLocation {
    /// A path, or a database URL. Text is a URL when it starts with a scheme
    /// of two or more characters followed by `://`, or with `sqlite:`,
    /// `postgres:` or `postgresql:`; anything else (also a non-UTF-8 path)
    /// is a file path.
    ///
    /// `sqlite:` URLs: `sqlite:///abs/path.db` (absolute),
    /// `sqlite:relative/path.db` (relative to the working directory) and
    /// `sqlite:/abs/path.db`; no host, no `?` parameters, no `#` fragment.
    /// Percent-escapes in the path are decoded (`sqlite:my%20log.db` is the
    /// file `my log.db`; write `%25` for a `%`, `%3F` for `?`, `%23` for
    /// `#`); `~` is not expanded (that is the shell's work). A plain path
    /// (no scheme) is taken as it is, escapes and all.
    ///
    /// `postgres://` and `postgresql://` URLs: as `tokio_postgres::Config`
    /// parses them (`postgresql://user:password@host:port/db?options=...`;
    /// `?options=-csearch_path%3Dmyschema` picks the schema of the log).
    ///
    /// # Errors
    ///
    /// [`LogError::UnsupportedUrl`] naming the scheme and why: a scheme this
    /// crate has no backend for, `sqlite:` or `postgres:` in a build without
    /// the `sqlite` or `postgres` cargo feature, a `sqlite:` URL with a host,
    /// parameters or no path, a `postgres:` URL that does not parse.
    pub fn parse(text: impl AsRef<OsStr>) -> Result<LogLocation, LogError> {
        let raw = text.as_ref();
        let Some(s) = raw.to_str() else {
            return Ok(LogLocation::File(PathBuf::from(raw)));
        };
        let Some((scheme, rest)) = split_scheme(s) else {
            return Ok(LogLocation::File(PathBuf::from(raw)));
        };
        let unsupported = |reason: String| LogError::UnsupportedUrl {
            url: redact_password(s),
            scheme: scheme.clone(),
            reason,
        };
        if scheme == "postgres" || scheme == "postgresql" {
            // The scheme in lower case, as tokio-postgres expects it.
            return postgres_location(&format!("{scheme}:{rest}")).map_err(unsupported);
        }
        if scheme != "sqlite" {
            return Err(unsupported(
                "no failed-offset log backend for this scheme (supported: a file path, sqlite: with the `sqlite` cargo feature, postgres:// with the `postgres` cargo feature)".into(),
            ));
        }
        let path = match rest.strip_prefix("//") {
            Some(after) if after.starts_with('/') => after,
            Some(_) => {
                return Err(unsupported(
                    "a host is not supported: use sqlite:///absolute/path.db or sqlite:relative/path.db".into(),
                ));
            }
            None => rest,
        };
        if path.is_empty() {
            return Err(unsupported("no database path".into()));
        }
        if path.contains('?') {
            return Err(unsupported(
                "URL parameters (`?...`) are not supported (write `%3F` for a `?` in the path)"
                    .into(),
            ));
        }
        if path.contains('#') {
            return Err(unsupported(
                "a URL fragment (`#...`) is not supported (write `%23` for a `#` in the path)"
                    .into(),
            ));
        }
        sqlite_location(path).map_err(unsupported)
    }

    /// The file, or the database file; for PostgreSQL the URL with its
    /// password replaced by `***`.
    pub fn path(&self) -> &Path {
        match self {
            LogLocation::File(p) => p,
            #[cfg(feature = "sqlite")]
            LogLocation::Sqlite(p) => p,
            #[cfg(feature = "postgres")]
            LogLocation::Postgres { name, .. } => name,
        }
    }

    /// A writer's builder for this log, with the default settings.
    pub fn builder(&self) -> LogBuilder {
        match self {
            LogLocation::File(p) => super::FailedOffsetLog::builder(p),
            #[cfg(feature = "sqlite")]
            LogLocation::Sqlite(p) => super::FailedOffsetLog::sqlite(p),
            #[cfg(feature = "postgres")]
            LogLocation::Postgres { url, .. } => super::FailedOffsetLog::postgres(url),
        }
    }

    /// Reads the log, oldest entry first ([`LogStream::open`],
    /// `LogStream::open_sqlite` or `LogStream::open_postgres`).
    ///
    /// # Errors
    ///
    /// As those functions.
    pub fn stream(&self) -> Result<LogStream, LogError> {
        match self {
            LogLocation::File(p) => LogStream::open(p),
            #[cfg(feature = "sqlite")]
            LogLocation::Sqlite(p) => LogStream::open_sqlite(p),
            #[cfg(feature = "postgres")]
            LogLocation::Postgres { url, .. } => LogStream::open_postgres(url),
        }
    }
}

#[cfg(feature = "sqlite")]
fn sqlite_location(path: &str) -> Result<LogLocation, String> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    if bytes.is_empty() {
        return Err("no database path".into());
    }
    #[cfg(unix)]
    let path = {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    };
    #[cfg(not(unix))]
    let path = match String::from_utf8(bytes) {
        Ok(p) => PathBuf::from(p),
        Err(_) => return Err("the decoded path is not UTF-8".into()),
    };
    Ok(LogLocation::Sqlite(path))
}

/// The characters of a path escaped in a `sqlite:` URL: those the parser
/// reads as URL syntax, controls and the space.
#[cfg(feature = "sqlite")]
const SQLITE_PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'#');

/// `path` as a `sqlite:` URL that [`LogLocation::parse`] reads back as the
/// same path.
#[cfg(feature = "sqlite")]
fn sqlite_url(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let escaped = percent_encoding::percent_encode(&bytes, SQLITE_PATH_ESCAPES).to_string();
    // An absolute path after `sqlite://` (so `//x` stays a path, not a host).
    match escaped.starts_with('/') {
        true => format!("sqlite://{escaped}"),
        false => format!("sqlite:{escaped}"),
    }
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_location(_: &str) -> Result<LogLocation, String> {
    Err("this build has no SQLite support: enable the `sqlite` cargo feature".into())
}

#[cfg(feature = "postgres")]
fn postgres_location(url: &str) -> Result<LogLocation, String> {
    match url.parse::<tokio_postgres::Config>() {
        Ok(_) => Ok(LogLocation::Postgres {
            url: url.to_string(),
            name: PathBuf::from(redact_password(url)),
        }),
        Err(e) => Err(format!(
            "not a PostgreSQL URL (postgresql://user@host:port/db): {e}"
        )),
    }
}

#[cfg(not(feature = "postgres"))]
fn postgres_location(_: &str) -> Result<LogLocation, String> {
    Err("this build has no PostgreSQL support: enable the `postgres` cargo feature".into())
}

/// A connection string or URL with its password replaced by `***`: the
/// user info of a URL (`user:password@`), a `password` query parameter of a
/// URL, and a `password=` pair of the key=value form. For error messages
/// and names; the text is otherwise unchanged.
pub(crate) fn redact_password(conn: &str) -> String {
    let Some((scheme, rest)) = conn.split_once("://") else {
        return conn
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// The lower-cased scheme and the rest, when `s` is a URL.
fn split_scheme(s: &str) -> Option<(String, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let valid = scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let scheme = scheme.to_ascii_lowercase();
    (valid && (rest.starts_with("//") || KNOWN_SCHEMES.contains(&scheme.as_str())))
        .then_some((scheme, rest))
}

impl fmt::Display for LogLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLocation::File(p) => write!(f, "{}", p.display()),
            #[cfg(feature = "sqlite")]
            LogLocation::Sqlite(p) => f.write_str(&sqlite_url(p)),
            #[cfg(feature = "postgres")]
            LogLocation::Postgres { name, .. } => write!(f, "{}", name.display()),
        }
    }
}

impl std::str::FromStr for LogLocation {
    type Err = LogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLocation::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "postgres")]
    #[test]
    fn a_loader_refusing_a_connection_string_hides_its_password() {
        let Err(e) = crate::progress::postgres::Loader::connect(
            "postgresql://app:s3cret@127.0.0.1:notaport/app",
        ) else {
            panic!("not a connection string, yet accepted");
        };
        let text = format!("{e} {e:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn passwords_never_reach_a_name_or_an_error() {
        for (conn, want) in [
            (
                "postgresql://app:s3cret@db:5432/app?sslmode=disable",
                "postgresql://app:***@db:5432/app?sslmode=disable",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
            (
                "postgresql://app@db/app?sslmode=disable&password=s3cret",
                "postgresql://app@db/app?sslmode=disable&password=***",
            ),
            (
                "postgresql://app:s3cret@127.0.0.1:notaport/app",
                "postgresql://app:***@127.0.0.1:notaport/app",
            ),
            (
                "host=db user=app password=s3cret dbname=app",
                "host=db user=app password=*** dbname=app",
            ),
        ] {
            assert_eq!(redact_password(conn), want);
        }
        // A URL refused (bad port; or no PostgreSQL in this build): the
        // error names it without the password.
        for bad in [
            "postgresql://app:s3cret@127.0.0.1:notaport/app",
            "postgresql://app@127.0.0.1:notaport/app?password=s3cret",
        ] {
            let e = LogLocation::parse(bad).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn paths_stay_paths_and_urls_are_parsed() {
        for p in [
            "log.jsonl",
            "/var/log/x.jsonl",
            "notes:today.jsonl",
            "C:\\x.jsonl",
            "a",
        ] {
            assert_eq!(
                LogLocation::parse(p).unwrap(),
                LogLocation::File(p.into()),
                "{p}"
            );
        }
        for (url, scheme) in [
            ("postgresql:db", "postgresql"),
            ("mysql://h/db", "mysql"),
            ("sqlite://host/x.db", "sqlite"),
            ("sqlite:", "sqlite"),
            ("sqlite:x.db?mode=ro", "sqlite"),
        ] {
            match LogLocation::parse(url) {
                Err(LogError::UnsupportedUrl { scheme: s, .. }) => assert_eq!(s, scheme),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_urls() {
        for (url, path) in [
            ("sqlite:///abs/x.db", "/abs/x.db"),
            ("sqlite:/abs/x.db", "/abs/x.db"),
            ("sqlite:rel/x.db", "rel/x.db"),
            ("SQLITE:x.db", "x.db"),
        ] {
            assert_eq!(
                LogLocation::parse(url).unwrap(),
                LogLocation::Sqlite(path.into())
            );
        }
        assert_eq!(
            LogLocation::Sqlite("x.db".into()).to_string(),
            "sqlite:x.db"
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_url_escapes_are_decoded_and_display_reads_back() {
        for (url, path) in [
            ("sqlite:my%20log.db", "my log.db"),
            ("sqlite:///tmp/a%3Fb%23c%25d.db", "/tmp/a?b#c%d.db"),
            ("sqlite:caf%C3%A9.db", "café.db"),
            ("sqlite:~/x.db", "~/x.db"),
        ] {
            let l = LogLocation::parse(url).unwrap();
            assert_eq!(l, LogLocation::Sqlite(path.into()), "{url}");
            assert_eq!(LogLocation::parse(l.to_string()).unwrap(), l, "{url}");
        }
        for path in ["/abs/x.db", "//srv/share/x.db", "rel dir/x%41.db", "a?b#c"] {
            let l = LogLocation::Sqlite(path.into());
            assert_eq!(LogLocation::parse(l.to_string()).unwrap(), l, "{path}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let raw = std::ffi::OsStr::from_bytes(b"bad\xff.db");
            let l = LogLocation::Sqlite(raw.into());
            assert_eq!(l.to_string(), "sqlite:bad%FF.db");
            assert_eq!(LogLocation::parse(l.to_string()).unwrap(), l);
        }
        for (url, why) in [("sqlite:a.db#frag", "fragment"), ("sqlite:%", "")] {
            match LogLocation::parse(url) {
                Err(LogError::UnsupportedUrl { reason, .. }) => assert!(reason.contains(why)),
                Ok(LogLocation::Sqlite(p)) if why.is_empty() => assert_eq!(p, Path::new("%")),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_urls() {
        let l = LogLocation::parse("postgres://app:pw@db.example:5433/app").unwrap();
        assert!(
            matches!(&l, LogLocation::Postgres { url, .. } if url == "postgres://app:pw@db.example:5433/app")
        );
        assert_eq!(l.to_string(), "postgres://app:***@db.example:5433/app");
        assert_eq!(
            l.path(),
            Path::new("postgres://app:***@db.example:5433/app")
        );
        assert!(LogLocation::parse("POSTGRESQL://h/db").is_ok());
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn postgres_without_the_feature_names_it() {
        let e = LogLocation::parse("postgres://h/db").unwrap_err();
        assert!(e.to_string().contains("`postgres` cargo feature"), "{e}");
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn sqlite_without_the_feature_names_it() {
        let e = LogLocation::parse("sqlite:x.db").unwrap_err();
        assert!(e.to_string().contains("`sqlite` cargo feature"), "{e}");
    }
}
