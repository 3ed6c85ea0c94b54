//! The error of the definition parsers (`--tunnel`, `--vrrp` and the
//! configuration file's tables, which become the same words): which object,
//! which field, which value and why, as data. The configuration file finds
//! the line of the field and value from it, without reading the message.
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// "tunnel" or "vrrp instance".
    pub object: &'static str,
    pub name: String,
    /// The field (the spec's word) at fault; none for an unknown keyword
    /// or a whole-definition rule.
    pub field: Option<String>,
    /// The value given, when one was.
    pub value: Option<String>,
    /// What is wrong, as the message says it after the field.
    pub message: String,
}

impl SpecError {
    /// `field`: `message`.
    pub fn field(
        object: &'static str,
        name: &str,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object,
            name: name.to_owned(),
            field: Some(field.to_owned()),
            value: None,
            message: message.into(),
        }
    }

    /// `field`: "`value`" `what`.
    pub fn bad(object: &'static str, name: &str, field: &str, value: &str, what: &str) -> Self {
        Self::field(object, name, field, format!("{value:?} {what}")).value(value)
    }

    /// A message about the definition as a whole.
    pub fn whole(object: &'static str, name: &str, message: impl Into<String>) -> Self {
        Self {
            object,
            name: name.to_owned(),
            field: None,
            value: None,
            message: message.into(),
        }
    }

    /// Names the value the message is about.
    pub fn value(mut self, value: &str) -> Self {
        self.value = Some(value.to_owned());
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.object, self.name)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_object_name_field_message() {
        assert_eq!(
            SpecError::bad("tunnel", "t1", "ttl", "x", "is not a TTL").to_string(),
            "tunnel t1: ttl: \"x\" is not a TTL"
        );
        assert_eq!(
            SpecError::whole("vrrp instance", "v", "unknown keyword \"c\"").to_string(),
            "vrrp instance v: unknown keyword \"c\""
        );
    }
}
