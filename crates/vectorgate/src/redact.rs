//! Keeping secrets out of logs, errors and `Debug` output.

/// `scheme://user:***@host/db`: a connection URL without its password, for
/// every backend whose configuration is a URL (PostgreSQL, OceanBase...).
/// A URL without a password comes back unchanged.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_owned(),
    }
}

/// Free text (an error message, a driver's diagnostic) with every secret
/// it may carry masked: the password of each `scheme://user:password@host`
/// URL in it, and the value of `password=`/`pwd=`/`secret=`/`token=` pairs.
/// Used on everything vectorgate shows outside the process (gRPC errors,
/// `/readyz`, `Status`), so a driver that echoes its connection string
/// never leaks it.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains("://") {
            // The URL may be quoted or followed by punctuation: redact from
            // its scheme on, keeping what precedes it.
            let start = word
                .find("://")
                .and_then(|at| word[..at].rfind(|c: char| !c.is_ascii_alphanumeric() && c != '+'))
                .map_or(0, |p| p + 1);
            out.push_str(&word[..start]);
            out.push_str(&key_value(&url(&word[start..])));
        } else {
            out.push_str(&key_value(word));
        }
    }
    out
}

/// `password=secret` → `password=***` (case-insensitive key, also after a
/// `?`, `&` or `;` in a query string).
fn key_value(word: &str) -> String {
    const KEYS: &[&str] = &["password=", "pwd=", "passwd=", "secret=", "token="];
    let lower = word.to_ascii_lowercase();
    for key in KEYS {
        if let Some(at) = lower.find(key) {
            let boundary = at == 0
                || matches!(
                    lower.as_bytes()[at - 1],
                    b'?' | b'&' | b';' | b'"' | b'\'' | b'('
                );
            if boundary {
                let value_start = at + key.len();
                let value_end = word[value_start..]
                    .find(['&', ';', '"', '\'', ')', ','])
                    .map_or(word.len(), |e| value_start + e);
                return format!(
                    "{}***{}",
                    &word[..value_start],
                    key_value(&word[value_end..])
                );
            }
        }
    }
    word.to_owned()
}

#[cfg(test)]
mod tests {
    use super::{text, url};

    #[test]
    fn hides_secrets_in_free_text() {
        assert_eq!(
            text("error connecting to \"postgres://app:s3cret@db:5432/v\": refused"),
            "error connecting to \"postgres://app:***@db:5432/v\": refused"
        );
        assert_eq!(
            text("bad dsn host=db password=hunter2 user=x"),
            "bad dsn host=db password=*** user=x"
        );
        assert_eq!(
            text("url mysql://h/db?user=a&password=p&ssl=1 failed"),
            "url mysql://h/db?user=a&password=***&ssl=1 failed"
        );
        assert_eq!(text("no secrets here"), "no secrets here");
        assert_eq!(text("PASSWORD=x"), "PASSWORD=***");
    }

    #[test]
    fn hides_only_the_password() {
        assert_eq!(
            url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            url("mysql://root%40t:p@w@h:2881/test?x=1"),
            "mysql://root%40t:***@h:2881/test?x=1"
        );
        assert_eq!(url("mysql://root@h:2881/test"), "mysql://root@h:2881/test");
        assert_eq!(url("postgres://h/db"), "postgres://h/db");
        assert_eq!(url("not a url"), "not a url");
    }
}
