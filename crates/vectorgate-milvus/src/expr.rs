//! Milvus boolean filter expressions, built in one place.
//!
//! Every value that reaches an expression is a string literal produced by
//! [`literal`], which quotes and escapes it; values are ids that
//! `vectorgate::validate` has already accepted (`[A-Za-z0-9._:-]{1,64}`),
//! so escaping is a second line of defence, not the first. Field names are
//! the crate's own constants, never input. Numbers are formatted from
//! integers.

use std::fmt::Write as _;

/// `value` as a double-quoted Milvus string literal. Backslash and double
/// quote are backslash-escaped, and every control character becomes a
/// `\u{XXXX}`-style escape (`\uXXXX`), so the literal always ends where it
/// should, whatever `value` holds.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `field == "value"`.
pub fn eq(field: &str, value: &str) -> String {
    format!("{field} == {}", literal(value))
}

/// `field in ["a", "b"]`.
pub fn one_of<S: AsRef<str>>(field: &str, values: &[S]) -> String {
    format!("{field} in {}", list(values))
}

/// `field not in ["a", "b"]`.
pub fn none_of<S: AsRef<str>>(field: &str, values: &[S]) -> String {
    format!("{field} not in {}", list(values))
}

/// `field > "value"` (string fields compare bytewise in Milvus).
pub fn greater(field: &str, value: &str) -> String {
    format!("{field} > {}", literal(value))
}

/// `field <= "value"`.
pub fn at_most(field: &str, value: &str) -> String {
    format!("{field} <= {}", literal(value))
}

/// `field >= n` for an integer field.
pub fn int_at_least(field: &str, value: i64) -> String {
    format!("{field} >= {value}")
}

/// `field < n` for an integer field.
pub fn int_below(field: &str, value: i64) -> String {
    format!("{field} < {value}")
}

/// The conjunction of `parts`, each parenthesised; the empty string (no
/// filter) when there are none.
pub fn and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        _ => parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

fn list<S: AsRef<str>>(values: &[S]) -> String {
    let mut out = String::with_capacity(values.len() * 16 + 2);
    out.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&literal(v.as_ref()));
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a literal back the way Milvus' parser does (a double-quoted
    /// string with Go escapes), returning the value and the rest.
    fn unquote(text: &str) -> (String, &str) {
        let mut chars = text.char_indices();
        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{text}");
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (value, &text[i + 1..]),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('"') => value.push('"'),
                    Some('\\') => value.push('\\'),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let unit = u32::from_str_radix(&hex, 16).unwrap();
                        value.push(char::from_u32(unit).unwrap());
                    }
                    other => panic!("unexpected escape {other:?} in {text}"),
                },
                c => {
                    assert!(!c.is_control(), "raw control character in {text:?}");
                    value.push(c);
                }
            }
        }
        panic!("unterminated literal {text}")
    }

    #[test]
    fn plain_ids_are_quoted_verbatim() {
        assert_eq!(literal("abc"), "\"abc\"");
        for id in ["a--b", "x:y", "...", "-", "_", "1e5", "NULL", "a.b:c-d_e"] {
            assert_eq!(literal(id), format!("\"{id}\""), "{id}");
        }
    }

    #[test]
    fn quotes_backslashes_and_controls_are_escaped() {
        assert_eq!(literal("a\"b"), r#""a\"b""#);
        assert_eq!(literal("a\\b"), r#""a\\b""#);
        assert_eq!(literal("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(literal("a\0b"), r#""a\u0000b""#);
        assert_eq!(literal("\u{7f}"), r#""\u007f""#);
        // The classic breakout attempts stay inside one literal.
        for hostile in [
            "\" || team_id != \"",
            "x\\\" or 1 == 1 or \"",
            "\\",
            "\"",
            "\\\"",
            "a'b",
            "é and ü 🌍",
            "line\nbreak",
            "\u{0}\u{1}\u{1f}",
        ] {
            let quoted = literal(hostile);
            let (value, rest) = unquote(&quoted);
            assert_eq!(value, hostile, "round trip of {hostile:?} via {quoted}");
            assert_eq!(rest, "", "{quoted} must be exactly one literal");
        }
    }

    #[test]
    fn builders_compose() {
        assert_eq!(eq("team_id", "t-1"), r#"team_id == "t-1""#);
        assert_eq!(
            one_of("dataset_id", &["a", "b"]),
            r#"dataset_id in ["a", "b"]"#
        );
        assert_eq!(
            none_of("collection_id", &["x\"y"]),
            r#"collection_id not in ["x\"y"]"#
        );
        assert_eq!(greater("id", "a"), r#"id > "a""#);
        assert_eq!(at_most("id", "b"), r#"id <= "b""#);
        assert_eq!(int_at_least("created_at_ms", -5), "created_at_ms >= -5");
        assert_eq!(int_below("created_at_ms", 7), "created_at_ms < 7");
        assert_eq!(and(&[]), "");
        assert_eq!(and(&[eq("a", "1")]), r#"a == "1""#);
        assert_eq!(
            and(&[eq("a", "1"), one_of("b", &["2"])]),
            r#"(a == "1") && (b in ["2"])"#
        );
    }
}
