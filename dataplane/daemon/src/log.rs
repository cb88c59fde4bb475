//! Structured logs to stderr through `tracing`, with a filter that the `log-level`
//! command and SIGHUP can replace while the daemon runs.

use std::sync::{Arc, Mutex};

use c10m_dataplane::{HookError, LogLevel};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The reloadable filter.
struct Filter {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogLevel for Filter {
    fn get(&self) -> String {
        self.current.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, filter: &str) -> Result<(), HookError> {
        let f =
            EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.handle.reload(f)?;
        if let Ok(mut c) = self.current.lock() {
            *c = filter.to_owned();
        }
        Ok(())
    }
}

/// Installs the subscriber (and the `log` bridge) with `filter`.
pub(crate) fn init(filter: &str) -> Result<Arc<dyn LogLevel>, String> {
    let f = EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
    let (layer, handle) = reload::Layer::new(f);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Filter {
        handle,
        current: Mutex::new(filter.to_owned()),
    }))
}
