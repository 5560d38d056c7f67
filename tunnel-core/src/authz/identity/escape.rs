//! Which characters of peer-controlled text (SNI, certificate fields) are escaped before they
//! reach a log or a backend, and how: anything a terminal, a log viewer or a line-based log
//! shipper could take for a line break or use to reorder what is displayed; and, for values
//! handed to backends (PROXY TLVs) and joined lists (SANs), the escape character itself, the
//! list separator and NUL, so that each value reads back as exactly one value.

/// Whether `c` must not reach a log as is: C0/C1 controls (`\n`, `\r`, ESC, NEL...), the
/// Unicode line and paragraph separators (U+2028, U+2029), and the format characters
/// (general category Cf): bidi embeddings, overrides and isolates (U+202A-U+202E,
/// U+2066-U+2069), marks (U+200E, U+200F, U+061C), zero-width characters, BOM, tags...
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Unicode general category Cf (format characters), as of Unicode 15.
fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Appends the escaped form of `c`: `\xNN` up to U+00FF, `\u{NNNN}` above.
pub(crate) fn push_escaped(out: &mut String, c: char) {
    let n = c as u32;
    if n <= 0xFF {
        out.push_str(&format!("\\x{n:02x}"));
    } else {
        out.push_str(&format!("\\u{{{n:04x}}}"));
    }
}

/// The escape character of [`list_item`] and [`field_value`].
pub(crate) const ESCAPE: char = '\\';
/// What separates the items of a list written with [`list_item`]: the comma (followed by a
/// space, `DNS:a, URI:b`).
pub(crate) const LIST_SEPARATOR: char = ',';

/// `value` as one item of a comma-separated list for a backend or a log (the SANs of the
/// PROXY TLV `0xE1`, the audit's `sans=`): [`field_value`], and the separator `,` as `\,`.
/// Read left to right, `\` escapes the next character or starts `\xNN`/`\u{NNNN}`, and an
/// unescaped `,` ends the item, whatever a certificate holds.
pub(crate) fn list_item(value: &str) -> String {
    escape_with(value, |c| c == LIST_SEPARATOR)
}

/// `value` as one field for a backend (the CN sub-TLV `0x22`): the escape character `\` as
/// `\\`, and characters [`needs_escape`] flags (NUL included) as `\xNN`/`\u{NNNN}`, so that
/// neither a C-string reader (stopping at NUL) nor a line reader sees another value.
pub(crate) fn field_value(value: &str) -> String {
    escape_with(value, |_| false)
}

fn escape_with(value: &str, special: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            if c == ESCAPE || special(c) {
                out.push(ESCAPE);
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_and_fields_escape_separator_backslash_and_controls() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "alice@example.com",
                "alice@example.com",
                "alice@example.com",
            ),
            ("a, URI:x", r"a\, URI:x", "a, URI:x"),
            (r"b\, c", r"b\\\, c", r"b\\, c"),
            (r"x/\x00", r"x/\\x00", r"x/\\x00"),
            (
                "v@corp.com\0@e.com",
                r"v@corp.com\x00@e.com",
                r"v@corp.com\x00@e.com",
            ),
            ("a\nb\u{202e}", r"a\x0ab\u{202e}", r"a\x0ab\u{202e}"),
        ];
        for (raw, item, field) in cases {
            assert_eq!(list_item(raw), *item, "{raw:?}");
            assert_eq!(field_value(raw), *field, "{raw:?}");
        }
    }

    #[test]
    fn escapes_separators_controls_and_format_characters() {
        let cases: &[(char, bool)] = &[
            ('\n', true),
            ('\r', true),
            ('\u{1b}', true),
            ('\u{7f}', true),
            ('\u{85}', true),
            ('\u{2028}', true),
            ('\u{2029}', true),
            ('\u{202a}', true),
            ('\u{202e}', true),
            ('\u{2066}', true),
            ('\u{2069}', true),
            ('\u{200e}', true),
            ('\u{200b}', true),
            ('\u{feff}', true),
            ('\u{e0041}', true),
            ('a', false),
            (' ', false),
            ('=', false),
            ('\\', false),
            ('é', false),
            ('ß', false),
            ('中', false),
            ('\u{2027}', false),
            ('\u{202f}', false),
            ('\u{206a}', true),
        ];
        for (c, want) in cases {
            assert_eq!(needs_escape(*c), *want, "U+{:04X}", *c as u32);
        }
    }

    #[test]
    fn escaped_forms() {
        let mut s = String::new();
        for c in ['\n', '\u{85}', '\u{2028}', '\u{202e}', '\u{e0041}'] {
            push_escaped(&mut s, c);
        }
        assert_eq!(s, "\\x0a\\x85\\u{2028}\\u{202e}\\u{e0041}");
    }
}
