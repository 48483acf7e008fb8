//! How a failure's cause is written: an error and the errors it comes from, each said
//! once.
//!
//! `anyhow`'s `{:#}` writes every error of the chain after the one before it; an error
//! whose message already ends with its source's (as `TransportError::Io` does) would
//! have that source written twice.

/// `error` and its sources, joined by `": "`, leaving out a source whose message the
/// text already ends with.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.is_empty() {
            text = message;
        } else if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_core::TransportError;
    use std::io;

    #[test]
    fn a_source_already_said_is_not_said_again() {
        let error = TransportError::Io {
            context: "opening role-0-to-role-1".to_string(),
            source: io::Error::from_raw_os_error(36),
        };
        let error = anyhow::Error::new(error);
        let once = describe(&error);
        assert_eq!(
            once.matches("File name too long").count(),
            1,
            "{once}; anyhow says {error:#}"
        );
        let error = error.context("cannot start");
        assert!(describe(&error).starts_with("cannot start: opening role-0-to-role-1: "));
    }

    #[test]
    fn sources_not_said_yet_are_joined_as_anyhow_joins_them() {
        let error = anyhow::Error::new(io::Error::other("disk on fire")).context("cannot read");
        assert_eq!(describe(&error), format!("{error:#}"));
    }
}
