//! Field-level validation errors: every rejected input names the field and says why.

use std::collections::BTreeMap;

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

    /// Records a problem unless `value` is 1 to `max` characters without control
    /// characters: the rule for names, reasons, notes and ids.
    pub fn require_text(&mut self, field: &str, value: &str, max: usize) {
        if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
            self.add(
                field,
                format!("must be 1 to {max} characters without control characters"),
            );
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
