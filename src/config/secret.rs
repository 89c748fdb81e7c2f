//! Secret values (provider API keys). Their `Debug` and `Display` never show the value, so a
//! key cannot reach a log line, an error message or a panic through formatting.

use std::fmt;
use std::sync::Arc;

/// A secret string. Only [`SecretString::expose`] reveals it, at the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<str>);

impl SecretString {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The raw value: for the `Authorization` header sent to the provider, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = SecretString::new("fw_supersecret");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{:?}", Some(s.clone())).contains("supersecret"));
        assert_eq!(s.expose(), "fw_supersecret");
    }
}
