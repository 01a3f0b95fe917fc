//! One byte budget for what the writers hold on behalf of connections, all connections
//! together: bodies of HTTP exchanges in flight and the decoders' buffers (`--decode http`),
//! the state of each TCP conversation (`--format pcapng`). Each connection also has its own
//! caps (bodies up to `--max-body`, 32 MiB of bodies per connection, fixed caps on heads,
//! frames and tables); this bound holds over all of them, however many connections are open.
//!
//! What does not fit is not kept and is counted by cause (a body's bytes "over the memory
//! budget"; a pcapng conversation evicted), never dropped silently.

/// `--memory-budget`'s default.
pub const DEFAULT_MEMORY_BUDGET: u64 = 128 << 20;

/// Bytes held against a limit, by holders that say what they hold before and after each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    limit: u64,
    held: u64,
    peak: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            held: 0,
            peak: 0,
        }
    }

    /// How much a holder that holds `own` bytes now may hold in all: its own bytes plus what
    /// the others leave free.
    pub fn allowance(&self, own: u64) -> u64 {
        self.limit.saturating_sub(self.held.saturating_sub(own))
    }

    /// Whether `bytes` more fit.
    pub fn fits(&self, bytes: u64) -> bool {
        self.held.saturating_add(bytes) <= self.limit
    }

    /// A holder went from `before` to `after` bytes.
    pub fn update(&mut self, before: u64, after: u64) {
        self.held = self.held.saturating_sub(before).saturating_add(after);
        self.peak = self.peak.max(self.held);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn held(&self) -> u64 {
        self.held
    }

    /// The most held at once.
    pub fn peak(&self) -> u64 {
        self.peak
    }
}

impl Default for MemoryBudget {
    fn default() -> MemoryBudget {
        MemoryBudget::new(DEFAULT_MEMORY_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_share_the_limit() {
        let mut budget = MemoryBudget::new(100);
        assert_eq!(budget.allowance(0), 100);
        budget.update(0, 60);
        // The holder of the 60 may grow to 100; another one only to 40.
        assert_eq!(budget.allowance(60), 100);
        assert_eq!(budget.allowance(0), 40);
        budget.update(0, 40);
        assert_eq!(budget.allowance(0), 0);
        assert!(!budget.fits(1));
        budget.update(60, 0);
        assert_eq!(budget.held(), 40);
        assert_eq!(budget.peak(), 100);
        assert!(budget.fits(60));
    }
}
