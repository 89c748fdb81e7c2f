//! Configuration errors: every one carries the file, the YAML document and the field path, and
//! validation collects all of them before giving up.

use std::fmt;
use std::path::PathBuf;

/// Where in the configuration something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File the document came from.
    pub file: PathBuf,
    /// 1-based index of the YAML document in that file.
    pub doc: usize,
    /// `Kind namespace/name` of the object, when known.
    pub object: Option<String>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {path}: {message}")]
pub struct ConfigError {
    /// Which document.
    pub location: Location,
    /// Field path inside the document, such as `spec.rules[0].backendRefs[0].name`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {}", self.file.display(), self.doc)?;
        if let Some(object) = &self.object {
            write!(f, ", {object}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn new(location: &Location, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.clone(),
            path: path.into(),
            message: message.into(),
        }
    }
}
