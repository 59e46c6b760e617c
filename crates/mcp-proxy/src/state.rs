//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use crate::audit::Audit;
use crate::broker::Broker;
use crate::console::Console;
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
    /// The audit of client requests; `None` when neither the audit log nor the console is
    /// on (its layer is then not installed).
    pub audit: Option<Audit>,
    /// The operator's console; `None` unless enabled.
    pub console: Option<Arc<Console>>,
}

impl AppState {
    /// A fresh state with an empty in-memory broker, alone (`config.cluster` is not joined:
    /// see `AppState::connect`).
    pub fn new(config: Config) -> Self {
        let console = config
            .console
            .clone()
            .map(|c| Arc::new(Console::new(c, config.tls.is_some())));
        let audit = Audit::new(
            &config.audit,
            config.trusted_proxies.clone(),
            console.as_ref().map(Console::observer),
        );
        AppState {
            broker: Broker::new(config),
            metrics: Arc::new(Metrics::new()),
            topology: None,
            audit,
            console,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.broker.config()
    }
}
