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

#[cfg(test)]
mod tests {
    use super::url;

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
