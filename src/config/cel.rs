//! `CEL` costs: an expression over the request's model, backend, route and token counts,
//! compiled once with the config (cel crate) and evaluated per response.

use std::sync::Arc;

use cel::{Context, Program, Value};

/// The numbers and names a cost expression can use.
#[derive(Debug, Clone, Copy, Default)]
pub struct CelInputs<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub route_name: &'a str,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub reasoning_tokens: u64,
}

/// A compiled cost expression.
#[derive(Clone)]
pub struct CelCost {
    source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for CelCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CEL({:?})", self.source)
    }
}

impl PartialEq for CelCost {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CelCost {}

impl CelCost {
    /// Compiles `source` and checks it evaluates to a number with sample inputs, so unknown
    /// variables and type errors are config errors rather than per-request surprises.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program =
            Program::compile(source).map_err(|e| format!("invalid CEL expression: {e}"))?;
        let cost = Self {
            source: source.to_string(),
            program: Arc::new(program),
        };
        let sample = CelInputs {
            model: "m",
            backend: "b",
            route_name: "r",
            input_tokens: 3,
            cached_input_tokens: 1,
            cache_creation_input_tokens: 1,
            output_tokens: 2,
            total_tokens: 5,
            reasoning_tokens: 1,
        };
        cost.evaluate(&sample)?;
        Ok(cost)
    }

    /// The cost for one response: a non-negative number.
    pub fn evaluate(&self, inputs: &CelInputs<'_>) -> Result<f64, String> {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("model", inputs.model.to_string());
        ctx.add_variable_from_value("backend", inputs.backend.to_string());
        ctx.add_variable_from_value("route_name", inputs.route_name.to_string());
        ctx.add_variable_from_value("input_tokens", Value::UInt(inputs.input_tokens));
        ctx.add_variable_from_value(
            "cached_input_tokens",
            Value::UInt(inputs.cached_input_tokens),
        );
        ctx.add_variable_from_value(
            "cache_creation_input_tokens",
            Value::UInt(inputs.cache_creation_input_tokens),
        );
        ctx.add_variable_from_value("output_tokens", Value::UInt(inputs.output_tokens));
        ctx.add_variable_from_value("total_tokens", Value::UInt(inputs.total_tokens));
        ctx.add_variable_from_value("reasoning_tokens", Value::UInt(inputs.reasoning_tokens));
        let value = self
            .program
            .execute(&ctx)
            .map_err(|e| format!("CEL evaluation failed: {e}"))?;
        let n = match value {
            Value::UInt(n) => n as f64,
            Value::Int(n) => n as f64,
            Value::Float(n) => n,
            other => return Err(format!("CEL expression must give a number, got {other:?}")),
        };
        if n.is_finite() && n >= 0.0 {
            Ok(n)
        } else {
            Err(format!(
                "CEL expression gave {n}, not a non-negative number"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_over_tokens_and_names() {
        let c =
            CelCost::compile("model == 'big' ? input_tokens * 3u + output_tokens : total_tokens")
                .unwrap();
        let mut i = CelInputs {
            model: "big",
            input_tokens: 10,
            output_tokens: 2,
            total_tokens: 12,
            ..CelInputs::default()
        };
        assert_eq!(c.evaluate(&i), Ok(32.0));
        i.model = "small";
        assert_eq!(c.evaluate(&i), Ok(12.0));
        let f =
            CelCost::compile("double(input_tokens) * 0.5 + double(cached_input_tokens)").unwrap();
        assert_eq!(f.evaluate(&i), Ok(5.0));
    }

    #[test]
    fn bad_expressions_are_refused_at_compile_time() {
        assert!(CelCost::compile("input_tokens +")
            .unwrap_err()
            .contains("invalid CEL"));
        assert!(CelCost::compile("no_such_variable + 1u").is_err());
        assert!(CelCost::compile("'text'")
            .unwrap_err()
            .contains("must give a number"));
    }
}
