//! The `log` backend.

/// `log` backend: kernel (aya-log) and loader messages on stderr.
pub struct StderrLog {
    level: log::LevelFilter,
}

impl StderrLog {
    pub fn install(verbose: bool) {
        let level = if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        };
        let logger = Box::leak(Box::new(StderrLog { level }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // aya's own debug output (relocations, feature probes) is for aya's
        // developers, not for operators.
        let limit = if metadata.target().starts_with("aya") {
            log::Level::Warn
        } else {
            log::Level::Trace
        };
        metadata.level() <= self.level && metadata.level() <= limit
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "netmon: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}
