//! raft-rs's own log, for replaying a seed with `SIM_TRACE=raft` (discarded otherwise). Lines
//! interleave with the simulation's events in the order they happen.

use std::fmt::{self, Write as _};

struct Stderr;

struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for Stderr {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let _ = slog::KV::serialize(values, record, &mut fields);
        eprintln!("            raft {}: {}{}", record.level().as_short_str(), record.msg(), fields.0);
        Ok(())
    }
}

pub fn logger() -> slog::Logger {
    if std::env::var("SIM_TRACE").is_ok_and(|v| v == "raft") {
        slog::Logger::root(Stderr, slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}
