//! The budgets' own metrics: how far reservations were from real costs, and the store's
//! errors. Labels are budgets and operations, bounded by the config, never by users.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Reservation;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Shared counters (cloning shares them); registered once with the processor's metrics.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    underestimated: Family<BudgetLabel, Counter>,
    overestimated: Family<BudgetLabel, Counter>,
    store_errors: Family<OpLabel, Counter>,
}

impl Telemetry {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ai_extproc_budget_underestimated_units",
            "Units requests cost beyond what they had reserved (the reservation error that can overshoot a budget), by budget",
            self.underestimated.clone(),
        );
        registry.register(
            "ai_extproc_budget_overestimated_units",
            "Units reserved that requests did not use (held from others until settled), by budget",
            self.overestimated.clone(),
        );
        registry.register(
            "ai_extproc_budget_store_errors",
            "Budget store (Redis) operations that failed or timed out, by operation (admit, settle)",
            self.store_errors.clone(),
        );
    }

    /// A reservation settled to `cost`.
    pub fn settled(&self, r: &Reservation, cost: u64) {
        let label = BudgetLabel {
            budget: r.claim.budget.clone(),
        };
        if cost > r.reserved {
            self.underestimated
                .get_or_create(&label)
                .inc_by(cost - r.reserved);
        } else if cost < r.reserved {
            self.overestimated
                .get_or_create(&label)
                .inc_by(r.reserved - cost);
        }
    }

    pub fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabel { op }).inc();
    }
}
