//! Hand-written scripts whose stdout is worked out by hand from the bank's
//! specification, compared byte for byte, over every transport and every way of giving
//! `master` its script (a path, stdin, `-`).

mod support;

use support::{TRANSPORTS, VIAS, parse_blocks, run_script, run_script_via};

/// A script and the stdout the specification requires of it.
struct Case {
    name: &'static str,
    script: &'static [u8],
    stdout: &'static str,
}

/// Two nodes. The snapshot starts at 3 with 60 and 45 on their way from 9: node 3
/// takes both while recording (9 -> 3), then 9 records when 3's marker reaches it,
/// behind nothing, so (3 -> 9) is empty although a transfer of 0 follows the marker.
const TWO_NODES: Case = Case {
    name: "two nodes",
    script: b"StartMaster
CreateNode 9 260
CreateNode 3 840
Send 3 9 125
Send 9 3 60
Receive 9 3
BeginSnapshot 3
Send 9 3 45
Send 3 9 0
Receive 3 9
Receive 3 9
Receive 9 3
Receive 9 3
Receive 3 9
CollectState
PrintSnapshot
Send 9 3 1000
Send 9 3 280
Receive 3 9
PrintSnapshot
KillAll
",
    stdout: "3 Transfer 125
Started by Node 3
9 Transfer 60
9 Transfer 45
3 SnapshotToken -1
3 Transfer 0
9 SnapshotToken -1
---Node states
node 3 = 715
node 9 = 280
---Channel states
channel (3 -> 9) = 0
channel (9 -> 3) = 105
ERR_SEND
9 Transfer 280
---Node states
node 3 = 715
node 9 = 280
---Channel states
channel (3 -> 9) = 0
channel (9 -> 3) = 105
",
};

/// Three nodes created out of order, with ids of three widths (7 < 15 < 230). The
/// first snapshot, started by 15, catches money in transit on three channels; one
/// transfer taken before its receiver recorded is not recorded, one sent after its
/// sender recorded is not either. The collected snapshot is printed again while the
/// second one is open, and the second one finds every channel empty.
const THREE_NODES: Case = Case {
    name: "three nodes",
    script: b"StartMaster
CreateNode 230 500
CreateNode 7 300
CreateNode 15 200
Send 7 15 50
Send 7 230 20
Send 230 7 100
Send 15 230 70
BeginSnapshot 15
Send 230 15 30
Receive 15 7
Receive 7 15
Send 7 230 5
Receive 7 230
Receive 230 7
Receive 230 15
Receive 230 15
Receive 230 7
Receive 15 230
Receive 15 7
Receive 15 230
Receive 7 230
CollectState
Receive 230 7
PrintSnapshot
BeginSnapshot 7
PrintSnapshot
Receive 15 7
Receive 230 7
Receive 7 15
Receive 7 230
Receive 15 230
Receive 230 15
CollectState
PrintSnapshot
KillAll
",
    stdout: "Started by Node 15
7 Transfer 50
15 SnapshotToken -1
230 Transfer 100
7 Transfer 20
15 Transfer 70
15 SnapshotToken -1
7 SnapshotToken -1
230 Transfer 30
7 SnapshotToken -1
230 SnapshotToken -1
230 SnapshotToken -1
7 Transfer 5
---Node states
node 7 = 230
node 15 = 130
node 230 = 460
---Channel states
channel (7 -> 15) = 50
channel (7 -> 230) = 0
channel (15 -> 7) = 0
channel (15 -> 230) = 0
channel (230 -> 7) = 100
channel (230 -> 15) = 30
Started by Node 7
---Node states
node 7 = 230
node 15 = 130
node 230 = 460
---Channel states
channel (7 -> 15) = 50
channel (7 -> 230) = 0
channel (15 -> 7) = 0
channel (15 -> 230) = 0
channel (230 -> 7) = 100
channel (230 -> 15) = 30
7 SnapshotToken -1
7 SnapshotToken -1
15 SnapshotToken -1
230 SnapshotToken -1
230 SnapshotToken -1
15 SnapshotToken -1
---Node states
node 7 = 325
node 15 = 210
node 230 = 465
---Channel states
channel (7 -> 15) = 0
channel (7 -> 230) = 0
channel (15 -> 7) = 0
channel (15 -> 230) = 0
channel (230 -> 7) = 0
channel (230 -> 15) = 0
",
};

/// One node: no channel, so the snapshot completes at once and its block ends after
/// the channel header. The largest amount there is fits.
const ONE_NODE: Case = Case {
    name: "one node",
    script: b"StartMaster
CreateNode 42 18446744073709551615
BeginSnapshot 42
CollectState
PrintSnapshot
KillAll
",
    stdout: "Started by Node 42
---Node states
node 42 = 18446744073709551615
---Channel states
",
};

/// The input rules: comments, blank lines, CRLF, tabs, runs of spaces, leading zeros
/// (also past twenty digits), the largest id, amount 0, and a last line without `\n`
/// and without `KillAll`.
const LAYOUT: Case = Case {
    name: "layout",
    script: b"# a comment first\r
\r
   \t  
\tStartMaster\t\r
CreateNode   0007\t 00100\r
CreateNode 4294967295 000000000000000000000000000050
   # an indented comment: Send 7 4294967295 1
#KillAll
Send 7 04294967295 0
Send\t7 4294967295  40 \r
Receive 4294967295 7
BeginSnapshot 4294967295
Receive 4294967295 007
\t\tReceive 7 4294967295
Receive 4294967295 7\r
CollectState
PrintSnapshot",
    stdout: "7 Transfer 0
Started by Node 4294967295
7 Transfer 40
4294967295 SnapshotToken -1
7 SnapshotToken -1
---Node states
node 7 = 60
node 4294967295 = 50
---Channel states
channel (7 -> 4294967295) = 40
channel (4294967295 -> 7) = 0
",
};

/// Four nodes 0 < 8 < 99 < 1000 and money in transit on five channels at once: some
/// sent before the snapshot, one (8 -> 99) sent during it but before its sender
/// recorded, and one transfer of 0. Node 8 can pay 12 after the snapshot only because
/// it received 1 after recording 11; ERR_SEND before and after.
const IN_TRANSIT: Case = Case {
    name: "in transit",
    script: b"StartMaster
CreateNode 1000 10
CreateNode 99 20
CreateNode 8 30
CreateNode 0 40
Send 0 8 11
Send 0 99 12
Send 0 1000 13
Send 8 0 21
Send 99 0 7
Send 1000 0 9
Send 1000 8 1
BeginSnapshot 0
Send 8 99 9
Send 8 1000 0
Receive 1000 0
Receive 1000 0
Receive 99 0
Receive 99 0
Receive 99 8
Receive 8 0
Receive 8 0
Receive 8 1000
Receive 8 99
Receive 8 1000
Receive 99 8
Receive 99 1000
Receive 1000 8
Receive 1000 8
Receive 1000 99
Receive 0 1000
Receive 0 99
Receive 0 8
Receive 0 8
Receive 0 1000
Receive 0 99
Send 99 8 44
CollectState
Send 8 99 12
Send 8 99 1
PrintSnapshot
",
    stdout: "Started by Node 0
0 Transfer 13
0 SnapshotToken -1
0 Transfer 12
0 SnapshotToken -1
8 Transfer 9
0 Transfer 11
0 SnapshotToken -1
1000 Transfer 1
99 SnapshotToken -1
1000 SnapshotToken -1
8 SnapshotToken -1
1000 SnapshotToken -1
8 Transfer 0
8 SnapshotToken -1
99 SnapshotToken -1
1000 Transfer 9
99 Transfer 7
8 Transfer 21
8 SnapshotToken -1
1000 SnapshotToken -1
99 SnapshotToken -1
ERR_SEND
ERR_SEND
---Node states
node 0 = 4
node 8 = 11
node 99 = 25
node 1000 = 13
---Channel states
channel (0 -> 8) = 0
channel (0 -> 99) = 0
channel (0 -> 1000) = 0
channel (8 -> 0) = 21
channel (8 -> 99) = 9
channel (8 -> 1000) = 0
channel (99 -> 0) = 7
channel (99 -> 8) = 0
channel (99 -> 1000) = 0
channel (1000 -> 0) = 9
channel (1000 -> 8) = 1
channel (1000 -> 99) = 0
",
};

const CASES: [Case; 5] = [TWO_NODES, THREE_NODES, ONE_NODE, LAYOUT, IN_TRANSIT];

#[test]
fn scripts_print_exactly_what_the_spec_says() {
    for &transport in TRANSPORTS {
        for case in &CASES {
            for via in VIAS {
                let mut run = run_script_via(transport, Some(1), case.script, via);
                run.what = format!("{} [{}]", run.what, case.name);
                run.assert_stdout(case.stdout.as_bytes())
                    .assert_code(0)
                    .assert_quiet();
            }
        }
    }
}

#[test]
fn no_random_choice_is_made_in_these_scripts() {
    // Any seed, or none, gives the same bytes.
    for &transport in TRANSPORTS {
        for case in &CASES {
            for seed in [None, Some(0), Some(u64::MAX)] {
                let mut run = run_script(transport, seed, case.script);
                run.what = format!("{} [{}]", run.what, case.name);
                run.assert_stdout(case.stdout.as_bytes()).assert_code(0);
            }
        }
    }
}

/// The script without its last `KillAll` line.
fn without_killall(script: &[u8]) -> Option<Vec<u8>> {
    let body = script.strip_suffix(b"KillAll\n")?;
    Some(body.to_vec())
}

#[test]
fn end_of_input_is_like_killall() {
    let mut checked = 0;
    for &transport in TRANSPORTS {
        for case in &CASES {
            let Some(script) = without_killall(case.script) else {
                continue;
            };
            assert!(!script.ends_with(b"KillAll\n"));
            checked += 1;
            let mut run = run_script(transport, Some(1), &script);
            run.what = format!("{} [{}] without KillAll", run.what, case.name);
            run.assert_stdout(case.stdout.as_bytes())
                .assert_code(0)
                .assert_quiet();
        }
    }
    assert!(checked >= 3 * TRANSPORTS.len());
}

/// Lines that would be rejected, or would print, if they were read.
const AFTER_KILLALL: &[u8] = b"PrintSnapshot
Send 9 3 1
Send 9 3 99999
not a command
Receive 3
\xff\xfe
KillAll
";

#[test]
fn nothing_after_killall_is_read() {
    for &transport in TRANSPORTS {
        let mut script = TWO_NODES.script.to_vec();
        script.extend_from_slice(AFTER_KILLALL);
        run_script(transport, Some(1), &script)
            .assert_stdout(TWO_NODES.stdout.as_bytes())
            .assert_code(0)
            .assert_quiet();

        // Proof that the test has teeth: read, the same lines print and are rejected.
        let mut read = without_killall(TWO_NODES.script).expect("ends with KillAll");
        read.extend_from_slice(AFTER_KILLALL);
        let run = run_script(transport, Some(1), &read);
        run.assert_code(1);
        assert_ne!(run.stdout, TWO_NODES.stdout.as_bytes());
        assert_eq!(run.rejected_lines().len(), 3, "{}", run.err());
    }
}

#[test]
fn killall_without_newline_at_the_end() {
    for &transport in TRANSPORTS {
        let script = ONE_NODE.script.strip_suffix(b"\n").expect("ends with \\n");
        run_script(transport, None, script)
            .assert_stdout(ONE_NODE.stdout.as_bytes())
            .assert_code(0)
            .assert_quiet();
    }
}

#[test]
fn an_empty_script_prints_nothing() {
    for &transport in TRANSPORTS {
        for script in [&b""[..], b"StartMaster\n", b"# only a comment", b"\n\n\r\n"] {
            run_script(transport, None, script)
                .assert_stdout(b"")
                .assert_code(0)
                .assert_quiet();
        }
    }
}

#[test]
fn sixty_four_nodes() {
    // Every transport supports at least 64 nodes. Ids spread over the whole range;
    // money moves around a ring, and ReceiveAll settles a snapshot of all of them.
    let ids: Vec<u64> = (0..64u64).map(|i| i * 68_174_085 % 4_294_967_296).collect();
    let mut script = String::from("StartMaster\n");
    for (i, id) in ids.iter().enumerate() {
        script.push_str(&format!("CreateNode {id} {}\n", 1000 + i));
    }
    for (i, id) in ids.iter().enumerate() {
        let next = ids[(i + 1) % ids.len()];
        script.push_str(&format!("Send {id} {next} {}\n", i + 1));
    }
    script.push_str(&format!(
        "BeginSnapshot {}\nReceiveAll\nCollectState\nPrintSnapshot\n",
        ids[5]
    ));
    let total: u64 = (0..64).map(|i| 1000 + i).sum();
    for &transport in TRANSPORTS {
        let run = run_script(transport, Some(64), script.as_bytes());
        run.assert_code(0).assert_quiet();
        let blocks = parse_blocks(&run.out());
        assert_eq!(blocks.len(), 1, "{}", run.out());
        assert_eq!(blocks[0].nodes.len(), 64);
        assert_eq!(blocks[0].channels.len(), 64 * 63);
        assert_eq!(blocks[0].check(total), Ok(()));
        assert!(
            run.out()
                .starts_with(&format!("Started by Node {}\n---Node states\n", ids[5]))
        );
    }
}

/// Output and rejections written to one file keep the order of the script's lines,
/// whether the script is a file (whose output the master buffers) or comes on stdin
/// (where every answer goes out at once).
#[test]
fn stdout_and_stderr_in_one_file_keep_their_order() {
    let script = b"StartMaster\nCreateNode 1 100\nCreateNode 2 50\nSend 1 2 500\nBogus\n\
Send 1 2 10\nReceive 2 1\nCreateNode 1 5\nSend 2 1 1000\nPrintSnapshot\nKillAll\n";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bank.script");
    std::fs::write(&path, script).expect("write the script");
    let path = path.to_str().expect("a UTF-8 temporary path");
    for &transport in TRANSPORTS {
        let combined = |via_file: bool| {
            let log = dir.path().join(format!("{transport}-{via_file}.log"));
            let file = std::fs::File::create(&log).expect("create the log");
            let mut args = vec!["--transport", transport, "--seed", "1"];
            if via_file {
                args.push(path);
            }
            let mut command = support::master_command(&args);
            command
                .stdout(file.try_clone().expect("clone the log"))
                .stderr(file);
            let run = support::run_command_with_output(command, &args, script);
            run.assert_code(1);
            std::fs::read_to_string(&log).expect("read the log")
        };
        let from_stdin = combined(false);
        let from_file = combined(true);
        assert_eq!(from_file, from_stdin, "{transport}");
        // Every line in its place: the first rejection comes after the first answer.
        let first_err = from_stdin.find("ERR_SEND").expect("an ERR_SEND");
        let first_rejection = from_stdin.find("line 5:").expect("line 5 is rejected");
        assert!(first_err < first_rejection, "{transport}:\n{from_stdin}");
    }
}
