//! Field-level validation errors: every rejected input names the field and says why.

use std::collections::BTreeMap;

/// 1 to `max` characters, none of them hidden or a control.
pub fn is_text(value: &str, max: usize) -> bool {
    !value.is_empty() && value.chars().count() <= max && !value.chars().any(is_hidden_or_control)
}

/// 1 to `max` visible ASCII characters (`!` to `~`): what ids and idempotency keys are
/// made of, so that one never looks like another.
pub fn is_id(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// What [`is_id`] asks, in words.
pub fn id_rule(max: usize) -> String {
    format!("must be 1 to {max} visible ASCII characters, without spaces")
}

/// A plain address, `local@domain.tld`, and nothing around it: no display name, angle
/// brackets, comments or quoted parts. The local part is a dot-atom, the domain a host name
/// of letters, digits and hyphens, as every mail server accepts.
pub fn is_plain_email(address: &str) -> bool {
    const LOCAL_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let atoms = |part: &str, allowed: &dyn Fn(u8) -> bool| {
        part.split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(allowed))
    };
    let local_ok = (1..=64).contains(&local.len())
        && atoms(local, &|b| {
            b.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(&b)
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && atoms(domain, &|b| b.is_ascii_alphanumeric() || b == b'-')
        && labels
            .iter()
            .all(|l| l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    address.len() <= 254 && local_ok && domain_ok
}

/// Characters no name, note or reason may hold: controls, and the characters that are
/// not seen but change how the text around them reads or compares: Unicode's format
/// characters (bidirectional overrides and isolates, zero-width spaces and joiners, the
/// byte-order mark, soft hyphens, tags), line and paragraph separators, private-use
/// characters and noncharacters.
pub fn is_hidden_or_control(c: char) -> bool {
    const FORMAT: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x2028, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
        // Private use.
        (0xE000, 0xF8FF),
        (0xF0000, 0x10FFFF),
        // Noncharacters.
        (0xFDD0, 0xFDEF),
    ];
    let code = u32::from(c);
    c.is_control()
        || (code & 0xFFFE) == 0xFFFE
        || FORMAT
            .iter()
            .any(|&(first, last)| (first..=last).contains(&code))
}

/// Problems found in a request, keyed by field name. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: &str, problem: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, problem);
        errors
    }

    /// Records a problem; the first one found for a field is kept.
    pub fn add(&mut self, field: &str, problem: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| problem.into());
    }

    /// Records a problem unless `value` is readable text of 1 to `max` characters: the rule
    /// for names, reasons, notes and labels (see [`is_hidden_or_control`]).
    pub fn require_text(&mut self, field: &str, value: &str, max: usize) {
        if !is_text(value, max) {
            self.add(
                field,
                format!(
                    "must be 1 to {max} characters, without control, formatting or invisible characters"
                ),
            );
        }
    }

    /// Records a problem unless `value` is an id: 1 to `max` visible ASCII characters, no
    /// spaces.
    pub fn require_id(&mut self, field: &str, value: &str, max: usize) {
        if !is_id(value, max) {
            self.add(field, id_rule(max));
        }
    }

    /// Adds another set of problems as they are.
    pub fn merge(&mut self, other: Self) {
        for (field, problem) in other.0 {
            self.0.entry(field).or_insert(problem);
        }
    }

    /// Adds another set of problems under `prefix` (`usage.service`).
    pub fn nest(&mut self, prefix: &str, other: Self) {
        for (field, problem) in other.0 {
            self.0.entry(format!("{prefix}.{field}")).or_insert(problem);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_what_cannot_be_seen() {
        for good in [
            "Ada Lovelace",
            "Zoë",
            "東京",
            "customer asked: \"why?\"",
            "🙂",
        ] {
            assert!(is_text(good, 50), "{good}");
        }
        for bad in [
            "",
            "line\nbreak",
            "tab\there",
            "evil\u{202E}gpj.exe",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "iso\u{2066}late",
            "soft\u{00AD}hyphen",
            "tag\u{E0041}",
            "private\u{E000}",
            "line\u{2028}separator",
            "non\u{FFFF}character",
        ] {
            assert!(!is_text(bad, 50), "{bad:?}");
        }
        assert!(is_text(&"é".repeat(50), 50), "characters, not bytes");
        assert!(!is_text(&"é".repeat(51), 50));
    }

    #[test]
    fn emails_are_plain_addresses() {
        for good in [
            "ada@example.com",
            "ada.lovelace+billing@mail.example.co.uk",
            "o'brien@example.ie",
            "x@a-b.io",
        ] {
            assert!(is_plain_email(good), "{good}");
        }
        for bad in [
            "Eve<eve@evil.example>",
            "<eve@evil.example>",
            "a@b.c>",
            "Eve <eve@evil.example>",
            "\"eve\"@example.com",
            "eve@example.com (comment)",
            "eve@@example.com",
            "eve@example",
            "eve@-example.com",
            "eve@example-.com",
            "eve@example..com",
            ".eve@example.com",
            "eve.@example.com",
            "e..ve@example.com",
            "eve@example.com.",
            "eve@127.0.0.1",
            "ève@example.com",
            "eve@exa mple.com",
            "eve\u{200B}@example.com",
            "",
            "@example.com",
            "eve@",
        ] {
            assert!(!is_plain_email(bad), "{bad:?}");
        }
        assert!(!is_plain_email(&format!("{}@example.com", "a".repeat(65))));
    }

    #[test]
    fn ids_are_visible_ascii_without_spaces() {
        for good in ["job-1", "pm_card_visa", "order:2026/12/02#1", "~!"] {
            assert!(is_id(good, 255), "{good}");
        }
        for bad in ["", "job 1", "job\t1", "jöb", "id\u{200B}", "\u{FEFF}id"] {
            assert!(!is_id(bad, 255), "{bad:?}");
        }
        assert!(is_id(&"k".repeat(255), 255));
        assert!(!is_id(&"k".repeat(256), 255));
    }
}
