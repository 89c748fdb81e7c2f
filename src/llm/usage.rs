//! Token usage in provider responses, whatever API family wrote it (each family reads its own
//! wire format into these).

/// Token counts of one response. Missing numbers are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_creation_input: u64,
    pub output: u64,
    pub total: u64,
    pub reasoning: u64,
}

/// What the gateway reads from a JSON response (or one SSE event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    pub usage: Option<Usage>,
    /// The `model` the provider reports.
    pub model: Option<String>,
    /// The response's id, where a later request may name it (the Responses API).
    pub id: Option<String>,
}
