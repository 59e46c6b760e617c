//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::topology::Topology;
use crate::Config;

/// What every handler shares: the broker (which owns the configuration) and the metrics;
/// and the other instances serving the same pools, when there are any.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The session broker.
    pub broker: Broker,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Other instances serving the same pools; `None` runs alone.
    pub topology: Option<Arc<dyn Topology>>,
}

impl AppState {
    /// A fresh state with an empty in-memory broker, alone (`config.cluster` is not joined:
    /// see `AppState::connect`).
    pub fn new(config: Config) -> Self {
        AppState {
            broker: Broker::new(config),
            metrics: Arc::new(Metrics::new()),
            topology: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.broker.config()
    }
}
