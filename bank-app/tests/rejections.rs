//! Every kind of rejected line of the bank's specification ("Errors"), the usage
//! errors, ERR_SEND (which is not an error), and a closed stdout.
//!
//! A rejected line must have no effect: the run's stdout is the same as that of the
//! same script without the line, stderr holds exactly `line N: REASON` with the line's
//! number (blank lines and comments count), and the exit status is 1. Where a line of
//! the same place could change stdout, a "witness" line shows it: put in place of the
//! rejected one, it is accepted and stdout differs, so an effect would have been seen.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use support::{
    DEADLINE, TRANSPORTS, base_args, drain, master_command, node_limit, run_master, run_script,
    wait_or_kill,
};

/// Lines 1-5: a bank of two nodes holding 150.
const HEAD: &str = "# a bank of two\n\nStartMaster\nCreateNode 1 100\nCreateNode 2 50\n";

/// What follows by default: settles every channel and prints a snapshot, so that any
/// change of balance or of the snapshot shows.
const TAIL: &str =
    "ReceiveAll\nBeginSnapshot 2\nReceiveAll\nCollectState\nPrintSnapshot\nKillAll\n";

/// A line that is accepted here and changes stdout: the next snapshot shows it.
const PAY: &[u8] = b"Send 1 2 5";

const SEED: u64 = 7;

/// A place in a script, and lines that must be rejected there.
struct Place<'a> {
    before: &'a str,
    after: &'a str,
    /// An accepted line that changes stdout when put at this place.
    witness: Option<&'a [u8]>,
}

const DEFAULT: Place<'static> = Place {
    before: HEAD,
    after: TAIL,
    witness: Some(PAY),
};

fn script(before: &str, line: Option<&[u8]>, after: &str) -> Vec<u8> {
    let mut bytes = before.as_bytes().to_vec();
    if let Some(line) = line {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(after.as_bytes());
    bytes
}

/// Checks that each of `lines` is rejected at `place`, on every transport.
fn rejected_at(place: &Place, lines: &[&[u8]]) {
    rejected_at_on(TRANSPORTS, place, lines);
}

/// [`rejected_at`] on the given transports only.
fn rejected_at_on(transports: &[&str], place: &Place, lines: &[&[u8]]) {
    assert!(!lines.is_empty());
    let number = place.before.matches('\n').count() as u64 + 1;
    for &transport in transports {
        let clean = run_script(
            transport,
            Some(SEED),
            &script(place.before, None, place.after),
        );
        clean.assert_code(0).assert_quiet();
        if let Some(witness) = place.witness {
            let seen = run_script(
                transport,
                Some(SEED),
                &script(place.before, Some(witness), place.after),
            );
            seen.assert_code(0).assert_quiet();
            assert_ne!(
                seen.out(),
                clean.out(),
                "the witness {:?} changes nothing here",
                String::from_utf8_lossy(witness)
            );
        }
        for &line in lines {
            let mut run = run_script(
                transport,
                Some(SEED),
                &script(place.before, Some(line), place.after),
            );
            run.what = format!("{} with {:?}", run.what, String::from_utf8_lossy(line));
            run.assert_stdout(&clean.stdout).assert_code(1);
            assert_eq!(run.rejected_lines(), [number], "{}", run.what);
        }
    }
}

#[test]
fn unknown_commands() {
    rejected_at(
        &DEFAULT,
        &[
            b"Transfer 1 2 5",
            b"Sned 1 2 5",
            b"StopMaster",
            b"ReceiveAll!",
        ],
    );
}

#[test]
fn command_names_are_case_sensitive() {
    rejected_at(
        &DEFAULT,
        &[
            b"send 1 2 5",
            b"SEND 1 2 5",
            b"receiveAll",
            b"Killall",
            b"startmaster",
        ],
    );
}

#[test]
fn wrong_numbers_of_arguments() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 2",
            b"Send 1 2 5 5",
            b"Receive",
            b"Receive 2 1 1",
            b"ReceiveAll 1",
            b"CreateNode 3",
            b"CreateNode 3 5 5",
            b"BeginSnapshot",
            b"BeginSnapshot 1 2",
            b"CollectState now",
            b"PrintSnapshot 1",
            b"StartMaster again",
        ],
    );
    // A KillAll with an argument does not end the run.
    let place = Place {
        witness: Some(b"KillAll"),
        ..DEFAULT
    };
    rejected_at(&place, &[b"KillAll now"]);
}

#[test]
fn signed_numbers() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 2 +5",
            b"Send 1 2 -5",
            b"Send +1 2 5",
            b"Send 1 -2 5",
            b"Receive +2 1",
            b"BeginSnapshot -1",
        ],
    );
}

#[test]
fn arguments_that_are_not_numbers() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 2 five",
            b"Send 1 2 5x",
            b"Send 1 2 5.0",
            b"Send 1 2 0x5",
            b"Send 1 2 1e3",
            b"Send 1 2 5_000",
            "Send 1 2 \u{ff15}".as_bytes(),
            "Send 1 2 \u{665}".as_bytes(),
            b"Send one 2 5",
        ],
    );
}

#[test]
fn numbers_too_large() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 2 18446744073709551616",
            b"Send 1 2 00018446744073709551616",
            b"Send 1 2 99999999999999999999999999",
            b"Send 4294967296 2 5",
            b"Send 1 4294967297 5",
            b"Receive 1 99999999999",
            b"BeginSnapshot 4294967296",
        ],
    );
    // The largest id fits, so an unknown one is only unknown.
    let place = Place {
        witness: Some(b"CreateNode 4294967295 5"),
        ..DEFAULT
    };
    rejected_at(&place, &[b"CreateNode 4294967296 5"]);
}

#[test]
fn invalid_utf8() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 2 \xff5",
            b"Send 1 2 5 \xc3",
            b"\xffSend 1 2 5",
            b"\xc3\x28",
            b"Send 1\xa02 5",
        ],
    );
}

#[test]
fn a_hash_not_at_the_start() {
    rejected_at(
        &DEFAULT,
        &[b"Send 1 2 5 # pay", b"Send 1 2 5#", b"Send#1 2 5"],
    );
    let place = Place {
        witness: Some(b"KillAll"),
        ..DEFAULT
    };
    rejected_at(&place, &[b"KillAll # done"]);
}

#[test]
fn unknown_nodes() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 3 5",
            b"Send 3 1 5",
            b"Send 0 2 5",
            // Not ERR_SEND: that is only for a Send between existing nodes.
            b"Send 1 3 999999",
            b"Receive 3",
            b"Receive 3 1",
            b"Receive 1 3",
            b"BeginSnapshot 3",
            b"BeginSnapshot 4294967295",
        ],
    );
    // Names are checked before the state: an unknown node while a snapshot is open.
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nBeginSnapshot 1\n",
        after: "ReceiveAll\nCollectState\nPrintSnapshot\n",
        witness: Some(b"Send 2 1 5"),
    };
    rejected_at(&place, &[b"BeginSnapshot 3", b"Send 1 3 5", b"Receive 1 3"]);
}

#[test]
fn channels_that_do_not_exist() {
    rejected_at(
        &DEFAULT,
        &[
            b"Send 1 1 5",
            b"Send 2 2 0",
            b"Receive 1 1",
            b"Receive 02 2",
        ],
    );
}

#[test]
fn receive_from_an_empty_channel() {
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nSend 1 2 5\nReceive 2 1\n",
        ..DEFAULT
    };
    rejected_at(&place, &[b"Receive 2 1", b"Receive 1 2"]);
}

#[test]
fn receive_with_every_incoming_channel_empty() {
    rejected_at(&DEFAULT, &[b"Receive 2", b"Receive 1"]);
    // Node 2 has sent, but nothing has been sent to it.
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nSend 2 1 5\n",
        ..DEFAULT
    };
    rejected_at(&place, &[b"Receive 2"]);
}

#[test]
fn duplicate_create_node() {
    let place = Place {
        witness: Some(b"CreateNode 3 70"),
        ..DEFAULT
    };
    rejected_at(
        &place,
        &[b"CreateNode 2 70", b"CreateNode 1 0", b"CreateNode 002 1"],
    );
}

/// Lines 1-4: a snapshot of two nodes, opened.
const OPEN: &str = "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nBeginSnapshot 1\n";

/// Closes the open snapshot and prints it.
const CLOSE: &str = "ReceiveAll\nCollectState\nPrintSnapshot\nKillAll\n";

#[test]
fn create_node_while_a_snapshot_is_open() {
    let place = Place {
        before: OPEN,
        after: CLOSE,
        // Node 1 is recording (2 -> 1), whichever order ReceiveAll takes.
        witness: Some(b"Send 2 1 5"),
    };
    rejected_at(&place, &[b"CreateNode 3 70", b"CreateNode 0 0"]);
}

#[test]
fn second_begin_snapshot_while_open() {
    let place = Place {
        before: OPEN,
        after: CLOSE,
        witness: Some(b"Send 2 1 5"),
    };
    rejected_at(&place, &[b"BeginSnapshot 2", b"BeginSnapshot 1"]);
}

#[test]
fn collect_state_with_no_snapshot_open() {
    rejected_at(&DEFAULT, &[b"CollectState"]);
    // Nor right after a snapshot was collected.
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nBeginSnapshot 1\nReceiveAll\nCollectState\n",
        after: "Send 1 2 5\nReceiveAll\nPrintSnapshot\n",
        witness: Some(b"BeginSnapshot 2"),
    };
    rejected_at(&place, &[b"CollectState"]);
}

#[test]
fn collect_state_before_every_marker_is_taken() {
    // A collected snapshot, then a second one whose marker (2 -> 1) is still on its
    // way: PrintSnapshot must still print the first.
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nBeginSnapshot 1\nReceiveAll\n\
CollectState\nSend 1 2 30\nBeginSnapshot 2\n",
        after: "PrintSnapshot\nReceiveAll\nCollectState\nPrintSnapshot\n",
        witness: Some(b"Receive 1 2"),
    };
    rejected_at(&place, &[b"CollectState"]);
    // Three nodes, every marker taken but the one on (3 -> 2).
    let place = Place {
        before: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nCreateNode 3 10\nBeginSnapshot 1\n\
Receive 2 1\nReceive 3 1\nReceive 1 2\nReceive 1 3\nReceive 3 2\n",
        after: "Receive 2 3\nCollectState\nPrintSnapshot\n",
        witness: Some(b"Send 3 2 500"),
    };
    rejected_at(&place, &[b"CollectState"]);
}

#[test]
fn print_snapshot_with_nothing_collected() {
    let place = Place {
        witness: Some(b"Send 1 2 500"),
        ..DEFAULT
    };
    rejected_at(&place, &[b"PrintSnapshot"]);
    // Nor while the first snapshot is open.
    let place = Place {
        before: OPEN,
        after: CLOSE,
        witness: Some(b"Send 2 1 5"),
    };
    rejected_at(&place, &[b"PrintSnapshot"]);
}

#[test]
fn any_command_before_start_master() {
    let place = Place {
        before: "# not started yet\n",
        after: "StartMaster\nCreateNode 1 100\nCreateNode 2 50\nReceiveAll\nBeginSnapshot 2\n\
ReceiveAll\nCollectState\nPrintSnapshot\nKillAll\n",
        witness: None,
    };
    rejected_at(
        &place,
        &[
            b"CreateNode 1 100",
            b"Send 1 2 5",
            b"Receive 1",
            b"Receive 1 2",
            b"ReceiveAll",
            b"BeginSnapshot 1",
            b"CollectState",
            b"PrintSnapshot",
            // Does not end the run: the rest still prints.
            b"KillAll",
        ],
    );
    let run = run_script(
        TRANSPORTS[0],
        None,
        &script(place.before, None, place.after),
    );
    assert!(run.out().contains("---Node states"), "{}", run.out());
}

#[test]
fn second_start_master() {
    rejected_at(&DEFAULT, &[b"StartMaster", b"  StartMaster\t"]);
    let place = Place {
        before: "StartMaster\n",
        after: "CreateNode 1 100\nCreateNode 2 50\nBeginSnapshot 1\nReceiveAll\nCollectState\nPrintSnapshot\n",
        witness: Some(b"CreateNode 3 1"),
    };
    rejected_at(&place, &[b"StartMaster"]);
}

#[test]
fn create_node_past_the_total_money() {
    // The bank holds 150: 18446744073709551465 more is exactly u64::MAX.
    let place = Place {
        witness: Some(b"CreateNode 3 18446744073709551465"),
        ..DEFAULT
    };
    rejected_at(
        &place,
        &[
            b"CreateNode 3 18446744073709551466",
            b"CreateNode 3 18446744073709551615",
        ],
    );
}

#[test]
fn create_node_past_the_node_limit() {
    for &transport in TRANSPORTS {
        let Some(limit) = node_limit(transport) else {
            continue;
        };
        let mut before = String::from("StartMaster\n");
        for id in 0..limit {
            before.push_str(&format!("CreateNode {id} 1\n"));
        }
        let place = Place {
            before: &before,
            after: "Send 0 1 1\nReceive 1 0\nKillAll\n",
            witness: None,
        };
        rejected_at_on(
            &[transport],
            &place,
            &[format!("CreateNode {limit} 1").as_bytes()],
        );
    }
}

#[test]
fn every_rejected_line_is_reported_with_its_own_number() {
    // Several rejections in one run, counted across blank lines, comments and CRLF.
    let script = b"Send 1 2 3\r\n# comment\r\n\r\nStartMaster\r\nCreateNode 1 10\r\n\
CreateNode 1 10\r\n\t\r\nSend 1 1 1\r\nbogus\r\nReceive 1\r\nKillAll\r\nbogus\r\n";
    for &transport in TRANSPORTS {
        let run = run_script(transport, None, script);
        run.assert_stdout(b"").assert_code(1);
        assert_eq!(run.rejected_lines(), [1, 6, 8, 9, 10], "{}", run.err());
    }
}

#[test]
fn err_send_is_not_an_error() {
    let script = format!("{HEAD}Send 2 1 51\nSend 1 2 100\nSend 1 2 1\nKillAll\n");
    for &transport in TRANSPORTS {
        run_script(transport, Some(SEED), script.as_bytes())
            .assert_stdout(b"ERR_SEND\nERR_SEND\n")
            .assert_code(0)
            .assert_quiet();
    }
}

/// A script on stdin that prints as soon as it is run.
const PRINTS: &[u8] = b"StartMaster\nCreateNode 1 5\nBeginSnapshot 1\nKillAll\n";

#[test]
fn an_empty_key_is_a_usage_error_where_the_key_proves_the_peers() {
    let mut args = base_args("tcp", Some(SEED));
    args.extend(["--key".to_string(), String::new()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_master(&args, PRINTS);
    run.assert_stdout(b"").assert_code(2);
    assert!(
        run.err().contains("the cluster key is empty"),
        "{}",
        run.err()
    );
    // Under --tls the key is not used: an empty one is no mistake.
    let mut tls = args.clone();
    tls.push("--tls");
    run_master(&tls, PRINTS)
        .assert_stdout(b"Started by Node 1\n")
        .assert_code(0);
}

#[test]
fn usage_errors_run_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("no such script");
    let missing = missing.to_str().expect("UTF-8").to_string();
    let directory = dir.path().to_str().expect("UTF-8").to_string();
    for &transport in TRANSPORTS {
        let with_transport = |rest: &[&str]| {
            let mut args = vec!["--transport".to_string(), transport.to_string()];
            args.extend(rest.iter().map(|a| a.to_string()));
            args
        };
        let seeded = |rest: &[&str]| {
            let mut args = base_args(transport, Some(SEED));
            args.extend(rest.iter().map(|a| a.to_string()));
            args
        };
        let cases: Vec<Vec<String>> = vec![
            seeded(&["--bogus"]),
            seeded(&["-x"]),
            seeded(&["-", "-"]),
            seeded(&[&missing]),
            seeded(&[&directory]),
            vec!["--transport".into(), "carrier-pigeon".into()],
            vec!["--transport".into(), "".into()],
            vec!["--transport".into()],
            with_transport(&["--seed", "-1"]),
            with_transport(&["--seed", "abc"]),
            with_transport(&["--seed", "18446744073709551616"]),
            with_transport(&["--seed", ""]),
            with_transport(&["--seed"]),
            // Seconds that round to no time at all.
            seeded(&["--ack-timeout", "1e-300"]),
            seeded(&["--ack-timeout", "0"]),
        ];
        // The same stdin, with good arguments, prints.
        let good = seeded(&[]);
        let good: Vec<&str> = good.iter().map(String::as_str).collect();
        run_master(&good, PRINTS)
            .assert_stdout(b"Started by Node 1\n")
            .assert_code(0);
        for case in &cases {
            let args: Vec<&str> = case.iter().map(String::as_str).collect();
            let run = run_master(&args, PRINTS);
            run.assert_stdout(b"").assert_code(2);
            assert!(!run.stderr.is_empty(), "{}: says nothing", run.what);
            assert!(!run.err().contains("panicked"), "{}", run.err());
        }
    }
}

/// Starts `master ARGS` with every stream piped but stdin as given.
fn spawn(args: &[String], stdin: Stdio) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    master_command(&args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start master")
}

/// Reads the first line `child` prints, then closes its stdout, as `head -1` does.
/// Kills it and fails if no line comes within the deadline.
fn first_line_then_close(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        drop(reader);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("master printed no line within {DEADLINE:?}");
        }
    }
}

/// How the run ended once stdout was closed: quietly, neither panicking nor killed.
fn assert_ended_quietly(child: &mut Child, err: mpsc::Receiver<Vec<u8>>, what: &str) {
    let status = wait_or_kill(child, DEADLINE, what);
    let stderr = support::collect(err, what, "stderr");
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(stderr.is_empty(), "{what}: not quiet: {stderr}");
    assert!(
        status.code().is_some_and(|c| c != 101),
        "{what}: {status:?}"
    );
}

#[test]
fn closed_stdout_while_reading_stdin_ends_the_run_quietly() {
    for &transport in TRANSPORTS {
        let what = format!("master --transport {transport} with stdout closed");
        let mut child = spawn(&base_args(transport, Some(SEED)), Stdio::piped());
        let err = drain(child.stderr.take().expect("piped"));
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(b"StartMaster\nCreateNode 1 10\nCreateNode 2 10\nBeginSnapshot 1\n")
            .expect("write");
        stdin.flush().expect("flush");
        let first = first_line_then_close(&mut child);
        // Each line prints ERR_SEND: the first print fails and must end the run, so
        // master stops reading and a later write finds the pipe closed. A master that
        // read on would take the whole budget.
        let writer = thread::spawn(move || {
            let line = b"Send 1 2 11\n";
            let mut written = 0;
            while written < 4 << 20 {
                if stdin.write_all(line).is_err() {
                    return None;
                }
                written += line.len();
            }
            Some(written)
        });
        assert_ended_quietly(&mut child, err, &what);
        let read_on = writer.join().expect("the writer");
        assert_eq!(first, "Started by Node 1\n");
        assert_eq!(read_on, None, "{what}: read all it was given");
    }
}

#[test]
fn closed_stdout_on_a_long_script_ends_the_run_quietly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("prints-a-lot.script");
    let mut script = String::from(OPEN);
    script.push_str("ReceiveAll\nCollectState\n");
    for _ in 0..20_000 {
        script.push_str("PrintSnapshot\n");
    }
    std::fs::write(&path, &script).expect("write the script");
    let path = path.to_str().expect("UTF-8");
    for &transport in TRANSPORTS {
        let what = format!("master --transport {transport} SCRIPT | head -1");
        let mut args = base_args(transport, Some(SEED));
        args.push(path.to_string());
        let mut child = spawn(&args, Stdio::null());
        let err = drain(child.stderr.take().expect("piped"));
        let first = first_line_then_close(&mut child);
        assert_ended_quietly(&mut child, err, &what);
        assert_eq!(first, "Started by Node 1\n");
    }
}

/// `master ARGS` with `stdin` and its output going to `/dev/full`, whose every write
/// fails with "no space left on device"; its status and what it said on stderr.
fn to_a_full_disk(args: &[&str], stdin: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let err_path = dir.path().join("stderr");
    let mut command = support::master_command(args);
    command
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full, on Linux"))
        .stderr(std::fs::File::create(&err_path).expect("a stderr file"));
    let run = support::run_command_with_output(command, args, stdin);
    let err = std::fs::read_to_string(&err_path).expect("stderr is read back");
    (run.code, err)
}

#[test]
fn output_that_cannot_be_written_fails_the_run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("prints.script");
    std::fs::write(&script, PRINTS).expect("write the script");
    let script = script.to_str().expect("UTF-8");
    let seed = SEED.to_string();
    let lost = "master: cannot write the output: No space left on device";
    // Buffered (a script file) and written line by line (stdin).
    for args in [
        vec!["--seed", seed.as_str(), script],
        vec!["--seed", seed.as_str(), "-"],
    ] {
        let (code, err) = to_a_full_disk(&args, PRINTS);
        assert_eq!(code, Some(3), "{args:?}: {err}");
        assert!(err.starts_with(lost), "{args:?}: {err}");
    }
    let (code, err) = to_a_full_disk(&["load", "--nodes", "2", "--transfers", "10"], b"");
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("master load: cannot write the summary: No space left on device"),
        "{err}"
    );
}

#[test]
fn a_line_past_the_longest_is_refused_and_the_run_goes_on() {
    let longest = bank_app::script::MAX_LINE;
    let mut script = b"StartMaster\nCreateNode 1 10\nSend 1 1 ".to_vec();
    script.resize(script.len() + 2 * longest, b'1');
    script.extend_from_slice(b"\n# ");
    script.resize(script.len() + 2 * longest, b'#');
    script.extend_from_slice(b"\nBeginSnapshot 1\n");
    let args = base_args("mem", Some(SEED));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_master(&args, &script);
    run.assert_stdout(b"Started by Node 1\n").assert_code(1);
    assert_eq!(
        run.err(),
        format!("line 3: the line is longer than {longest} bytes\n"),
        "the long comment on line 4 is a comment"
    );
}
