//! Several hosts: nodes started by hand with `master node`, each on a host of its own,
//! and a master that attaches them from a cluster file (`--transport tcp --cluster`).
//!
//! Each node runs in a network namespace this test makes, with its own address on a
//! bridge in the test's namespace, where the master listens. Namespace, bridge and
//! veth names carry the test's pid; they are removed on drop, and those of test runs
//! that are gone are cleared first. Where namespaces cannot be made (no root, no
//! iproute2), the nodes listen on 127.0.0.2 to 127.0.0.9 instead and the test says so;
//! with `CI=true` it fails rather than fall back. The tests take the hosts one at a
//! time (the names are the test process's).
//!
//! The cluster runs over TLS, with certificates from `master certs`, as by default;
//! and with `--auth key`, the shared key's hello.

mod support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use support::{collect, drain, master_command, run_script, wait_or_kill};

/// Held by each test that makes hosts: their names are the test process's.
static HOSTS: Mutex<()> = Mutex::new(());

/// How the endpoints of a cluster prove who they are.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// TLS, with the files `master certs` wrote into this directory.
    Tls(&'a Path),
    /// The shared key.
    Key,
}

impl Auth<'_> {
    /// The arguments for the endpoint whose files are named `who` (`master`,
    /// `node-3`).
    fn args(&self, who: &str) -> Vec<String> {
        match self {
            Auth::Tls(dir) => support::identity_args(dir, who),
            Auth::Key => vec!["--auth".to_string(), "key".to_string()],
        }
    }
}

/// Writes the certificates of `CLUSTER` for `ids` into `dir` with `master certs`.
fn make_certs(dir: &Path, ids: &[u32]) -> PathBuf {
    support::make_certs(dir, CLUSTER, ids);
    dir.to_path_buf()
}

const KEY: &str = "a shared secret for the cluster test";
const CLUSTER: &str = "lab";
const NODE_PORT: u16 = 7000;

/// Hosts for the nodes: network namespaces on a bridge, or loopback addresses.
struct Lab {
    /// The namespace of each host, when namespaces are used.
    namespaces: Vec<String>,
    /// The host end of each namespace's link, removed first: removing a namespace
    /// frees its links later, in the kernel's own time.
    links: Vec<String>,
    bridge: Option<String>,
    /// Each node host's address.
    hosts: Vec<Ipv4Addr>,
    /// Where the master listens.
    master: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether a process of this pid is alive.
fn alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// Removes namespaces and bridges left by test runs whose process is gone.
fn clear_stale() {
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix("snaprs")
            && let Some((pid, _)) = rest.split_once('n')
            && !alive(pid)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip_output(&["-o", "link", "show", "type", "bridge"]).lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if let Some(pid) = name.strip_prefix("snb")
            && !alive(pid)
        {
            let _ = ip(&["link", "del", name]);
        }
    }
}

impl Lab {
    fn namespaces(hosts: usize) -> Result<Lab, String> {
        clear_stale();
        let pid = std::process::id();
        // Each lab of this process names its links anew (`snv<pid><tag>x<host>`, at
        // most 15 bytes): the last lab's may linger while the kernel frees them.
        static LABS: AtomicU32 = AtomicU32::new(0);
        let tag = char::from(b'a' + (LABS.fetch_add(1, Ordering::Relaxed) % 26) as u8);
        let subnet = (pid % 250) as u8;
        let bridge = format!("snb{pid}");
        let master = Ipv4Addr::new(10, 231, subnet, 1);
        let mut lab = Lab {
            namespaces: Vec::new(),
            links: Vec::new(),
            bridge: None,
            hosts: Vec::new(),
            master,
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        lab.bridge = Some(bridge.clone());
        ip(&["addr", "add", &format!("{master}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=hosts {
            let ns = format!("snaprs{pid}n{i}");
            let outside = format!("snv{pid}{tag}x{i}");
            let inside = format!("snp{pid}{tag}x{i}");
            let address = Ipv4Addr::new(10, 231, subnet, 10 + i as u8);
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            lab.links.push(outside.clone());
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            in_ns(&["addr", "add", &format!("{address}/24"), "dev", &inside])?;
            in_ns(&["link", "set", &inside, "up"])?;
            in_ns(&["link", "set", "lo", "up"])?;
            lab.hosts.push(address);
        }
        Ok(lab)
    }

    fn loopback(hosts: usize) -> Lab {
        Lab {
            namespaces: Vec::new(),
            links: Vec::new(),
            bridge: None,
            hosts: (0..hosts)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                .collect(),
            master: Ipv4Addr::LOCALHOST,
        }
    }

    fn new(hosts: usize) -> Lab {
        match Lab::namespaces(hosts) {
            Ok(lab) => lab,
            Err(why) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI must run the cluster test in network namespaces, but: {why}"
                );
                eprintln!(
                    "cluster test: cannot make network namespaces ({why}); \
                     running the nodes on 127.0.0.2-127.0.0.9 instead"
                );
                Lab::loopback(hosts)
            }
        }
    }

    /// Starts node `id` on host `index` and waits until it listens.
    fn start_node(&self, index: usize, id: u32, auth: Auth) -> Child {
        let listen = format!("{}:{NODE_PORT}", self.hosts[index]);
        let exe = env!("CARGO_BIN_EXE_master");
        let node_args = [
            "node",
            "--id",
            &id.to_string(),
            "--listen",
            &listen,
            "--cluster",
            CLUSTER,
        ]
        .map(str::to_string);
        let mut command = match self.namespaces.get(index) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, exe]);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(node_args)
            .args(auth.args(&format!("node-{id}")))
            .env("SNAPSHOT_RS_KEY", KEY)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a node");
        // The node says it is waiting once its listener is up.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let ready = lines.by_ref().any(|line| {
            line.map(|l| l.contains("waiting for the master"))
                .unwrap_or(false)
        });
        assert!(ready, "node {id} ended before it listened");
        // Keep draining its stderr so that it never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        child
    }

    fn cluster_file(&self, ids: &[u32]) -> String {
        let mut file = format!("cluster {CLUSTER}\n");
        for (index, id) in ids.iter().enumerate() {
            file.push_str(&format!("node {id} {}:{NODE_PORT}\n", self.hosts[index]));
        }
        file
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A veth goes with its peer, at once.
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        if let Some(bridge) = &self.bridge {
            let _ = ip(&["link", "del", bridge]);
        }
    }
}

/// The node processes: killed and reaped if the test ends early.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            if let Ok(None) = node.try_wait() {
                let _ = node.kill();
                let _ = node.wait();
            }
        }
    }
}

const SCRIPT: &str = "StartMaster
CreateNode 3 1000
CreateNode 17 500
CreateNode 250 250
Send 3 17 100
Send 250 3 50
Send 17 250 25
BeginSnapshot 17
Receive 17
Receive 3
ReceiveAll
CollectState
PrintSnapshot
Send 3 250 900
Receive 250 3
KillAll
";

/// Runs `SCRIPT` with seed 9 on a master of the cluster of `ids` on `lab`, whose
/// nodes run already: its exit status, stdout and stderr.
fn run_cluster_master(lab: &Lab, ids: &[u32], auth: Auth) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster");
    std::fs::write(&file, lab.cluster_file(ids)).expect("write the cluster file");
    let listen = format!("{}:0", lab.master);
    let mut args: Vec<String> = [
        "--transport",
        "tcp",
        "--cluster",
        file.to_str().expect("UTF-8 path"),
        "--listen",
        &listen,
        "--seed",
        "9",
    ]
    .map(str::to_string)
    .to_vec();
    args.extend(auth.args("master"));
    if let Auth::Key = auth {
        args.extend(["--key".to_string(), KEY.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut master = master_command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the master");
    let mut input = master.stdin.take().expect("stdin is piped");
    // A master that fails early may have closed its input.
    let _ = std::io::Write::write_all(&mut input, SCRIPT.as_bytes());
    drop(input);
    let out = drain(master.stdout.take().expect("stdout is piped"));
    let err = drain(master.stderr.take().expect("stderr is piped"));
    let status = wait_or_kill(&mut master, Duration::from_secs(30), "cluster master");
    let stdout = collect(out, "cluster master", "stdout");
    let stderr = collect(err, "cluster master", "stderr");
    (
        status,
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs the script on a cluster of three hosts with `auth`, and checks that it prints
/// what one machine prints and that every node exits with the master.
fn a_cluster_runs_a_script_like_one_machine(auth: Auth) {
    let ids = [3, 17, 250];
    let lab = Lab::new(ids.len());
    let mut nodes = Nodes(
        ids.iter()
            .enumerate()
            .map(|(index, &id)| lab.start_node(index, id, auth))
            .collect(),
    );
    let (status, stdout, stderr) = run_cluster_master(&lab, &ids, auth);

    // The same script and seed on one machine print the same thing.
    let local = run_script("mem", Some(9), SCRIPT.as_bytes());
    local.assert_code(0);
    assert_eq!(stdout, local.out(), "stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");

    // KillAll made every attached node exit.
    for (node, id) in nodes.0.iter_mut().zip(ids) {
        let status = wait_or_kill(node, Duration::from_secs(5), &format!("node {id}"));
        assert!(status.success(), "node {id} exited with {status}");
    }
}

#[test]
fn a_cluster_of_hosts_runs_a_script_like_one_machine() {
    let _hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let certs = tempfile::tempdir().expect("a temporary directory");
    make_certs(certs.path(), &[3, 17, 250]);
    a_cluster_runs_a_script_like_one_machine(Auth::Tls(certs.path()));
}

#[test]
fn a_cluster_with_the_shared_key_runs_a_script_like_one_machine() {
    let _hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    a_cluster_runs_a_script_like_one_machine(Auth::Key);
}

#[test]
fn a_node_with_another_clusters_certificate_is_refused() {
    let _hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let ids = [3, 17, 250];
    let ours = tempfile::tempdir().expect("a temporary directory");
    let theirs = tempfile::tempdir().expect("a temporary directory");
    make_certs(ours.path(), &ids);
    // Another run of `master certs`: the same names, another authority.
    make_certs(theirs.path(), &ids);
    let lab = Lab::new(ids.len());
    let _nodes = Nodes(
        ids.iter()
            .enumerate()
            .map(|(index, &id)| {
                let dir = if id == 17 { theirs.path() } else { ours.path() };
                lab.start_node(index, id, Auth::Tls(dir))
            })
            .collect(),
    );
    let (status, stdout, stderr) = run_cluster_master(&lab, &ids, Auth::Tls(ours.path()));
    assert_eq!(status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "", "no balance is printed");
    assert!(stderr.starts_with("node 17: "), "stderr: {stderr}");
    assert!(stderr.contains("TLS"), "stderr: {stderr}");
}

#[test]
fn an_id_missing_from_the_cluster_file_is_rejected() {
    // No node needs to run: the master refuses the line before it reaches anyone.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster");
    std::fs::write(&file, "node 1 127.0.0.2:7000\n").expect("write the cluster file");
    let args = [
        "--transport",
        "tcp",
        "--cluster",
        file.to_str().expect("UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "key",
        "--key",
        KEY,
    ];
    let run = support::run_master(&args, b"StartMaster\nCreateNode 2 10\nKillAll\n");
    run.assert_stdout(b"").assert_code(1);
    assert_eq!(run.rejected_lines(), [2], "{}", run.err());
}
