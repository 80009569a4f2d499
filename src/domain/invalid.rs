//! Why a value was refused, in the words every module's validation shares.

/// Why one field was refused: a stable code and a sentence the customer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
    /// The accepted values, when the field takes one of a closed set.
    pub allowed: Option<Vec<String>>,
}

impl Invalid {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            allowed: None,
        }
    }

    /// The same problem, naming the values that are accepted.
    pub fn allowing(mut self, allowed: Vec<String>) -> Self {
        self.allowed = Some(allowed);
        self
    }
}
