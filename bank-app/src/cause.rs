//! How a failure's cause is written: an error and the errors it comes from, each said
//! once.
//!
//! An error says what happened and leaves its cause to its
//! [source](std::error::Error::source) (as `TransportError::Io` leaves the operating
//! system's error): whatever reaches the user is written with its whole chain.

use std::error::Error;
use std::fmt::Write;

/// `error` and its sources, joined by `": "`, as `anyhow`'s `{:#}` joins them.
pub fn describe(error: &anyhow::Error) -> String {
    chain(error.as_ref())
}

/// `error` and its sources, joined by `": "`.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_core::{NodeError, TransportError};
    use std::io;

    fn too_long() -> TransportError {
        TransportError::Io {
            context: "opening role-0-to-role-1".to_string(),
            source: io::Error::from_raw_os_error(36),
        }
    }

    #[test]
    fn an_operating_system_error_is_said_once_after_its_context() {
        let error = anyhow::Error::new(too_long());
        let once = describe(&error);
        assert_eq!(
            once,
            "opening role-0-to-role-1: File name too long (os error 36)"
        );
        assert_eq!(once, format!("{error:#}"));
        let error = error.context("cannot start");
        assert_eq!(
            describe(&error),
            "cannot start: opening role-0-to-role-1: File name too long (os error 36)"
        );
    }

    #[test]
    fn a_transparent_wrapper_keeps_the_chain() {
        let error = NodeError::from(too_long());
        assert_eq!(
            chain(&error),
            "opening role-0-to-role-1: File name too long (os error 36)"
        );
    }

    #[test]
    fn sources_are_joined_as_anyhow_joins_them() {
        let error = anyhow::Error::new(io::Error::other("disk on fire")).context("cannot read");
        assert_eq!(describe(&error), format!("{error:#}"));
    }
}
