//! The bank's command language: one command a line (`bank-app/README.md`, "Commands" and
//! "Reading the script").

use snapshot_core::NodeId;

/// One command of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `StartMaster`: starts the master and the observer.
    StartMaster,
    /// `CreateNode ID AMOUNT`: starts a node with a balance.
    CreateNode {
        /// The new node.
        node: NodeId,
        /// Its opening balance.
        amount: u64,
    },
    /// `Send FROM TO AMOUNT`: a transfer on the channel `from -> to`.
    Send {
        /// The paying node.
        from: NodeId,
        /// The paid node.
        to: NodeId,
        /// How much.
        amount: u64,
    },
    /// `Receive TO [FROM]`: `to` takes the head message of one of its incoming channels.
    Receive {
        /// The receiving node.
        to: NodeId,
        /// The channel's sender, or `None` for one drawn at random.
        from: Option<NodeId>,
    },
    /// `ReceiveAll`: every channel is drained, in a random order.
    ReceiveAll,
    /// `BeginSnapshot ID`: node `ID` starts a snapshot.
    BeginSnapshot(NodeId),
    /// `CollectState`: the observer collects the open snapshot.
    CollectState,
    /// `PrintSnapshot`: prints the last collected snapshot.
    PrintSnapshot,
    /// `KillAll`: ends the run.
    KillAll,
}

pub use crate::input::MAX_LINE;

/// Why a line is not a command. Its text is what the bank prints after `line N: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// The line is not UTF-8.
    #[error("the line is not valid UTF-8")]
    InvalidUtf8,
    /// The line is longer than [`MAX_LINE`] and not a comment.
    #[error("the line is longer than {MAX_LINE} bytes")]
    TooLong,
    /// The first word names no command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The command has the wrong number of arguments.
    #[error("wrong number of arguments to {command} (usage: {usage})")]
    Arity {
        /// The command.
        command: &'static str,
        /// What it takes.
        usage: &'static str,
    },
    /// An argument is not an unsigned decimal number.
    #[error("{0:?} is not a number (digits 0-9 only, no sign)")]
    NotANumber(String),
    /// An argument is a number too large for its place.
    #[error("{text} is larger than {max}")]
    TooLarge {
        /// The argument.
        text: String,
        /// The largest value allowed there.
        max: u64,
    },
}

/// Parses one line of a script, without its `\n`. Blank lines and comments are
/// `Ok(None)`.
pub fn parse_line(line: &[u8]) -> Result<Option<Command>, SyntaxError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // A comment is ignored whatever it holds, even bytes that are not UTF-8.
    let first = line.iter().find(|&&b| b != b' ' && b != b'\t');
    if first == Some(&b'#') {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(SyntaxError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| SyntaxError::InvalidUtf8)?;
    let mut words = words(line);
    // A blank line has no word.
    let Some(name) = words.next() else {
        return Ok(None);
    };
    // Up to one argument more than any command takes, without allocating: a line
    // with more still has too many.
    let mut kept = [""; 4];
    let mut count = 0;
    for (slot, word) in kept.iter_mut().zip(words) {
        *slot = word;
        count += 1;
    }
    let args = &kept[..count];
    let arity = |command: &'static str, usage: &'static str| SyntaxError::Arity { command, usage };
    let command = match (name, args) {
        ("StartMaster", []) => Command::StartMaster,
        ("StartMaster", _) => return Err(arity("StartMaster", "StartMaster")),
        ("CreateNode", [node, amount]) => Command::CreateNode {
            node: node_id(node)?,
            amount: amount_of(amount)?,
        },
        ("CreateNode", _) => return Err(arity("CreateNode", "CreateNode ID AMOUNT")),
        ("Send", [from, to, amount]) => Command::Send {
            from: node_id(from)?,
            to: node_id(to)?,
            amount: amount_of(amount)?,
        },
        ("Send", _) => return Err(arity("Send", "Send FROM TO AMOUNT")),
        ("Receive", [to]) => Command::Receive {
            to: node_id(to)?,
            from: None,
        },
        ("Receive", [to, from]) => Command::Receive {
            to: node_id(to)?,
            from: Some(node_id(from)?),
        },
        ("Receive", _) => return Err(arity("Receive", "Receive TO [FROM]")),
        ("ReceiveAll", []) => Command::ReceiveAll,
        ("ReceiveAll", _) => return Err(arity("ReceiveAll", "ReceiveAll")),
        ("BeginSnapshot", [node]) => Command::BeginSnapshot(node_id(node)?),
        ("BeginSnapshot", _) => return Err(arity("BeginSnapshot", "BeginSnapshot ID")),
        ("CollectState", []) => Command::CollectState,
        ("CollectState", _) => return Err(arity("CollectState", "CollectState")),
        ("PrintSnapshot", []) => Command::PrintSnapshot,
        ("PrintSnapshot", _) => return Err(arity("PrintSnapshot", "PrintSnapshot")),
        ("KillAll", []) => Command::KillAll,
        ("KillAll", _) => return Err(arity("KillAll", "KillAll")),
        (other, _) => return Err(SyntaxError::UnknownCommand(other.to_string())),
    };
    Ok(Some(command))
}

/// The words of `line`, between spaces and tabs. Found byte by byte: both are ASCII,
/// so every cut falls between two characters.
fn words(line: &str) -> impl Iterator<Item = &str> {
    let bytes = line.as_bytes();
    let blank = |at: usize| matches!(bytes.get(at), Some(b' ' | b'\t'));
    let mut at = 0;
    std::iter::from_fn(move || {
        while blank(at) {
            at += 1;
        }
        let start = at;
        while at < bytes.len() && !blank(at) {
            at += 1;
        }
        if start == at {
            return None;
        }
        line.get(start..at)
    })
}

fn number(text: &str, max: u64) -> Result<u64, SyntaxError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyntaxError::NotANumber(text.to_string()));
    }
    let too_large = || SyntaxError::TooLarge {
        text: text.to_string(),
        max,
    };
    let value = text.bytes().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    });
    match value {
        Some(value) if value <= max => Ok(value),
        _ => Err(too_large()),
    }
}

fn node_id(text: &str) -> Result<NodeId, SyntaxError> {
    let id = number(text, u64::from(u32::MAX))?;
    // `number` has bounded it by u32::MAX.
    Ok(NodeId(u32::try_from(id).unwrap_or(u32::MAX)))
}

fn amount_of(text: &str) -> Result<u64, SyntaxError> {
    number(text, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<Command>, SyntaxError> {
        parse_line(line.as_bytes())
    }

    #[test]
    fn commands_parse_with_any_spacing() {
        assert_eq!(parse("StartMaster"), Ok(Some(Command::StartMaster)));
        assert_eq!(
            parse(" \tSend  1\t\t2 300 \r"),
            Ok(Some(Command::Send {
                from: NodeId(1),
                to: NodeId(2),
                amount: 300
            }))
        );
        assert_eq!(
            parse("Receive 007 15"),
            Ok(Some(Command::Receive {
                to: NodeId(7),
                from: Some(NodeId(15))
            }))
        );
        assert_eq!(
            parse("CreateNode 4294967295 18446744073709551615"),
            Ok(Some(Command::CreateNode {
                node: NodeId(u32::MAX),
                amount: u64::MAX
            }))
        );
    }

    #[test]
    fn blank_lines_and_comments_are_skipped() {
        for line in [
            "",
            "   ",
            "\t",
            "\r",
            "# a comment",
            "   # indented",
            "#Send 1 2 3",
        ] {
            assert_eq!(parse(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(matches!(
            parse("startmaster"),
            Err(SyntaxError::UnknownCommand(_))
        ));
        assert!(matches!(parse("Send 1 2"), Err(SyntaxError::Arity { .. })));
        assert!(matches!(
            parse("ReceiveAll 1"),
            Err(SyntaxError::Arity { .. })
        ));
        assert!(matches!(
            parse("Send 1 2 -5"),
            Err(SyntaxError::NotANumber(_))
        ));
        assert!(matches!(
            parse("Send 1 2 +5"),
            Err(SyntaxError::NotANumber(_))
        ));
        assert!(matches!(
            parse("Send 1 2 5#"),
            Err(SyntaxError::NotANumber(_))
        ));
        assert!(matches!(
            parse("Send 1 2 ５"),
            Err(SyntaxError::NotANumber(_))
        ));
        assert!(matches!(
            parse("KillAll # bye"),
            Err(SyntaxError::Arity { .. })
        ));
        // More arguments than any command takes: too many, whatever they are.
        for line in [
            "Send 1 2 3 4",
            "Send x 2 3 4 5 6 7 8 9",
            "Receive 1 2 3",
            "Receive 1 2 3 4 5 6",
            "CreateNode 1 2 3 4 5",
        ] {
            let name = line.split(' ').next().unwrap();
            assert!(
                matches!(parse(line), Err(SyntaxError::Arity { command, .. }) if command == name),
                "{line}: {:?}",
                parse(line)
            );
        }
        assert_eq!(
            parse("Pay 1 2 3 4 5 6"),
            Err(SyntaxError::UnknownCommand("Pay".into()))
        );
        assert!(matches!(
            parse("CreateNode 4294967296 1"),
            Err(SyntaxError::TooLarge { .. })
        ));
        assert!(matches!(
            parse("Send 1 2 18446744073709551616"),
            Err(SyntaxError::TooLarge { .. })
        ));
        assert_eq!(parse_line(b"Send 1 2 \xff"), Err(SyntaxError::InvalidUtf8));
        assert_eq!(
            parse_line(b"# caf\xe9"),
            Ok(None),
            "a comment may hold any bytes"
        );
    }

    #[test]
    fn reasons_are_errors_that_read_as_the_bank_prints_them() {
        let reason = |line: &[u8]| -> String {
            let error: Box<dyn std::error::Error> = Box::new(parse_line(line).unwrap_err());
            assert!(error.source().is_none(), "a syntax error wraps nothing");
            error.to_string()
        };
        assert_eq!(reason(b"Send 1 2 \xff"), "the line is not valid UTF-8");
        assert_eq!(
            reason(b"start\"Master"),
            r#"unknown command "start\"Master""#
        );
        assert_eq!(
            reason(b"Send 1 2"),
            "wrong number of arguments to Send (usage: Send FROM TO AMOUNT)"
        );
        assert_eq!(
            reason(b"Receive"),
            "wrong number of arguments to Receive (usage: Receive TO [FROM])"
        );
        assert_eq!(
            reason("Send 1 2 -５\t".as_bytes()),
            r#""-５" is not a number (digits 0-9 only, no sign)"#
        );
        assert_eq!(
            reason(b"CreateNode 4294967296 1"),
            "4294967296 is larger than 4294967295"
        );
        assert_eq!(
            reason(b"Send 1 2 18446744073709551616"),
            "18446744073709551616 is larger than 18446744073709551615"
        );
    }
}
